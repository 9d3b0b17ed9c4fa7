use super::*;

#[test]
fn every_built_in_mapping_compiles() {
    for (name, text) in BUILT_IN {
        let m = compile(name, text).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert_eq!(&m.name, name);
    }
}

#[test]
fn problems_name_file_and_key() {
    let text = BUILT_IN[0]
        .1
        .replace("job_id = '.response.id'", "job_id = '.response.id |'");
    let err = compile("m.toml", &text).unwrap_err().to_string();
    assert!(err.starts_with("m.toml: create.job_id: cannot parse jq"), "{err}");
    let text = BUILT_IN[0]
        .1
        .replace("completed = \"done\"", "completed = \"finished\"");
    let err = compile("m.toml", &text).unwrap_err().to_string();
    assert!(err.contains("m.toml: states.completed:"), "{err}");
    let err = compile("m.toml", "[mapping]\nname = 1\n").unwrap_err().to_string();
    assert!(err.starts_with("m.toml: "), "{err}");
}

#[test]
fn an_upload_step_and_the_upload_image_mode_go_together() {
    let comfy = BUILT_IN
        .iter()
        .find(|(n, _)| *n == "comfyui")
        .map(|(_, t)| *t)
        .unwrap_or_default();
    let m = compile("comfyui", comfy).unwrap();
    assert_eq!(m.images, ImageMode::Upload);
    assert!(m.upload.is_some());
    let without_step = comfy.replace("[upload]", "[ignored_upload]");
    let err = compile("c.toml", &without_step).unwrap_err().to_string();
    assert!(err.contains("c.toml: "), "{err}");
    let start = comfy.find("[upload]").unwrap();
    let end = comfy[start..].find("\n[create]").unwrap() + start;
    let without_step = format!("{}{}", &comfy[..start], &comfy[end..]);
    let err = compile("c.toml", &without_step).unwrap_err().to_string();
    assert!(err.contains("c.toml: upload: missing"), "{err}");
    let not_upload = comfy.replace("images = \"upload\"", "images = \"none\"");
    let err = compile("c.toml", &not_upload).unwrap_err().to_string();
    assert!(err.contains("c.toml: upload: only used with"), "{err}");
    let bad_jq = comfy.replace("image = 'if (.response.subfolder", "image = 'if ((.response.subfolder");
    let err = compile("c.toml", &bad_jq).unwrap_err().to_string();
    assert!(err.contains("c.toml: upload.image: cannot parse jq"), "{err}");
}

#[test]
fn size_and_seconds_policies() {
    let mut m = compile("openai", BUILT_IN[0].1).unwrap();
    m.seconds = vec![(Seconds(5), Value::from(5)), (Seconds(10), Value::from(10))];
    m.seconds_policy = Policy::Nearest;
    assert_eq!(m.map_seconds(Seconds(4)).unwrap().0, Seconds(5));
    assert_eq!(m.map_seconds(Seconds(12)).unwrap().0, Seconds(10));
    m.seconds_policy = Policy::Reject;
    assert_eq!(m.map_seconds(Seconds(4)).unwrap_err(), vec!["5", "10"]);
    m.sizes = vec![
        ("1280x720".parse().unwrap(), Value::from("16:9")),
        ("720x1280".parse().unwrap(), Value::from("9:16")),
    ];
    m.size_policy = Policy::Nearest;
    assert_eq!(m.map_size("1024x1792".parse().unwrap()).unwrap().1, Value::from("9:16"));
    assert_eq!(m.map_size("1920x1080".parse().unwrap()).unwrap().1, Value::from("16:9"));
}
