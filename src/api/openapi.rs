//! `GET /openapi.json`: an OpenAPI 3.1 description of the Sora surface this shim serves, assembled from the same
//! JSON Schemas (`schemas/sora/`) that validate every request and that the contract tests check every response
//! against, so it cannot drift from what the server does. Tools like schemathesis run against it (CI does).
//!
//! Each schema file stands alone with its own `$defs`; here they move to `components/schemas` under the file's
//! name (`create_video_json.image_ref` …) and every `$ref` is rewritten to match. The multipart marker for an
//! uploaded file becomes `format: binary`.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

/// Rewrites `#/$defs/X` to `#/components/schemas/{owner}.X`, and the upload marker to a binary string.
fn rewrite(value: &mut Value, owner: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(def) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{owner}.{def}");
            }
            if map.get("const") == Some(&json!("<binary>")) {
                map.remove("const");
                map.insert("type".into(), json!("string"));
                map.insert("format".into(), json!("binary"));
            }
            map.values_mut().for_each(|v| rewrite(v, owner));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, owner)),
        _ => {}
    }
}

fn components() -> Map<String, Value> {
    let mut out = Map::new();
    for (name, text) in crate::schemas::ALL {
        // The files are embedded and parsed by the schema tests too; one that does not parse is left out here
        // rather than taking the whole description down.
        let Ok(Value::Object(mut schema)) = serde_json::from_str::<Value>(text) else {
            tracing::error!(schema = name, "an embedded schema is not a JSON object");
            continue;
        };
        schema.remove("$schema");
        schema.remove("$id");
        if let Some(Value::Object(defs)) = schema.remove("$defs") {
            for (def, mut body) in defs {
                rewrite(&mut body, name);
                out.insert(format!("{name}.{def}"), body);
            }
        }
        let mut schema = Value::Object(schema);
        rewrite(&mut schema, name);
        out.insert(name.to_owned(), schema);
    }
    out
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

fn both_bodies(json_name: &str, multipart_name: &str) -> Value {
    json!({"required": true, "content": {
        "application/json": {"schema": schema(json_name)},
        "multipart/form-data": {"schema": schema(multipart_name)},
    }})
}

/// The answers every operation may give besides its success: the error envelope.
fn responses(ok: Value) -> Value {
    let error = json!({"description": "The OpenAI error envelope", "content": {"application/json": {"schema": schema("error")}}});
    let mut r = Map::new();
    r.insert("200".into(), ok);
    for code in ["400", "401", "404", "405", "408", "409", "413", "429", "500"] {
        r.insert(code.into(), error.clone());
    }
    Value::Object(r)
}

fn ok(name: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": schema(name)}}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let video_id = path_param("video_id");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sora-shim: the OpenAI Videos (Sora) API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Sora Videos API as this proxy serves it. Schemas: schemas/sora/ in the sora-shim repository.",
        },
        "servers": [{"url": "/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/videos": {
                "post": {"operationId": "createVideo", "requestBody": both_bodies("create_video_json", "create_video_multipart"), "responses": responses(ok("video"))},
                "get": {
                    "operationId": "listVideos",
                    "parameters": [
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100}},
                        {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
                    ],
                    "responses": responses(ok("video_list")),
                },
            },
            "/videos/{video_id}": {
                "get": {"operationId": "retrieveVideo", "parameters": [video_id.clone()], "responses": responses(ok("video"))},
                "delete": {"operationId": "deleteVideo", "parameters": [video_id.clone()], "responses": responses(ok("video_deleted"))},
            },
            "/videos/{video_id}/content": {
                "get": {
                    "operationId": "downloadVideoContent",
                    "parameters": [video_id.clone(), {"name": "variant", "in": "query", "schema": {"type": "string", "enum": ["video", "thumbnail", "spritesheet"]}}],
                    "responses": responses(json!({"description": "The asset", "content": {
                        "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                        "image/webp": {"schema": {"type": "string", "format": "binary"}},
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    }})),
                },
            },
            "/videos/{video_id}/remix": {
                "post": {"operationId": "remixVideo", "parameters": [video_id], "requestBody": json_body("remix_video"), "responses": responses(ok("video"))},
            },
            "/videos/edits": {
                "post": {"operationId": "editVideo", "requestBody": both_bodies("edit_video_json", "edit_video_multipart"), "responses": responses(ok("video"))},
            },
            "/videos/extensions": {
                "post": {"operationId": "extendVideo", "requestBody": both_bodies("extend_video_json", "extend_video_multipart"), "responses": responses(ok("video"))},
            },
            "/videos/characters": {
                "post": {"operationId": "createCharacter", "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": schema("create_character")}}}, "responses": responses(ok("character"))},
            },
            "/videos/characters/{character_id}": {
                "get": {"operationId": "retrieveCharacter", "parameters": [path_param("character_id")], "responses": responses(ok("character"))},
            },
        },
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
});

pub fn document() -> &'static Value {
    &DOCUMENT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in the document points at a component that exists.
    #[test]
    fn every_reference_resolves() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(all.len() > 20);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(schemas.len() >= crate::schemas::ALL.len());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        assert!(!doc.to_string().contains("<binary>"));
    }
}
