//! The JSON Schemas of `schemas/sora/`, embedded once: request validation (`api::schema`), the OpenAPI
//! description (`api::openapi`) and the conformance kit's response checks all read them from here.

pub const CREATE_VIDEO_JSON: &str = include_str!("../schemas/sora/create_video.json.schema.json");
pub const CREATE_VIDEO_MULTIPART: &str = include_str!("../schemas/sora/create_video.multipart.schema.json");
pub const REMIX_VIDEO: &str = include_str!("../schemas/sora/remix_video.schema.json");
pub const EDIT_VIDEO_JSON: &str = include_str!("../schemas/sora/edit_video.json.schema.json");
pub const EDIT_VIDEO_MULTIPART: &str = include_str!("../schemas/sora/edit_video.multipart.schema.json");
pub const EXTEND_VIDEO_JSON: &str = include_str!("../schemas/sora/extend_video.json.schema.json");
pub const EXTEND_VIDEO_MULTIPART: &str = include_str!("../schemas/sora/extend_video.multipart.schema.json");
pub const CREATE_CHARACTER: &str = include_str!("../schemas/sora/create_character.multipart.schema.json");
pub const VIDEO: &str = include_str!("../schemas/sora/video.schema.json");
pub const VIDEO_LIST: &str = include_str!("../schemas/sora/video_list.schema.json");
pub const VIDEO_DELETED: &str = include_str!("../schemas/sora/video_deleted.schema.json");
pub const CHARACTER: &str = include_str!("../schemas/sora/character.schema.json");
pub const ERROR: &str = include_str!("../schemas/sora/error.schema.json");

/// Every schema with its OpenAPI component name, requests first.
pub const ALL: [(&str, &str); 13] = [
    ("create_video_json", CREATE_VIDEO_JSON),
    ("create_video_multipart", CREATE_VIDEO_MULTIPART),
    ("remix_video", REMIX_VIDEO),
    ("edit_video_json", EDIT_VIDEO_JSON),
    ("edit_video_multipart", EDIT_VIDEO_MULTIPART),
    ("extend_video_json", EXTEND_VIDEO_JSON),
    ("extend_video_multipart", EXTEND_VIDEO_MULTIPART),
    ("create_character", CREATE_CHARACTER),
    ("video", VIDEO),
    ("video_list", VIDEO_LIST),
    ("video_deleted", VIDEO_DELETED),
    ("character", CHARACTER),
    ("error", ERROR),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every file in schemas/sora/ is embedded (a new schema cannot be forgotten here).
    #[test]
    fn every_schema_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/sora");
        let files = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".schema.json")
            })
            .count();
        assert_eq!(files, super::ALL.len());
        for (name, text) in super::ALL {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok(), "{name}");
        }
    }
}
