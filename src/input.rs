//! Saved `kubectl get ... -o json|yaml` output -> Pods and Events, with
//! one-line errors that name the file and what is wrong.

use k8s_openapi::api::core::v1::{Event, Pod};
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid JSON: {message}")]
    Json { file: String, message: String },
    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: is empty")]
    Empty { file: String },
    #[error("{file}: expected {expected}, found {found}")]
    WrongKind {
        file: String,
        expected: &'static str,
        found: String,
    },
    #[error("{file}: {what} #{index}: {message}")]
    BadItem {
        file: String,
        what: &'static str,
        index: usize,
        message: String,
    },
}

fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decodes JSON or YAML (whichever the text is) into a JSON value.
pub fn decode(file: &str, text: &str) -> Result<Value, InputError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(InputError::Empty { file: file.into() });
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| InputError::Json {
            file: file.into(),
            message: one_line(e),
        })
    } else {
        let v: Value = serde_saphyr::from_str(trimmed).map_err(|e| InputError::Yaml {
            file: file.into(),
            message: one_line(e).chars().take(300).collect(),
        })?;
        if v.is_null() {
            return Err(InputError::Empty { file: file.into() });
        }
        Ok(v)
    }
}

/// The objects of a document: a List's items, or the document itself.
fn items(
    file: &str,
    v: Value,
    kind: &'static str,
    list_kind: &'static str,
) -> Result<Vec<Value>, InputError> {
    let found = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let wrong = |found: String| InputError::WrongKind {
        file: file.into(),
        expected: kind,
        found: if found.is_empty() {
            "an object without `kind`".into()
        } else {
            format!("kind {found}")
        },
    };
    if !v.is_object() {
        return Err(InputError::WrongKind {
            file: file.into(),
            expected: kind,
            found: "something that is not an object".into(),
        });
    }
    if found == "List" || found == list_kind {
        let Some(Value::Array(items)) = v.get("items").cloned() else {
            return Err(wrong(format!("{found} without items")));
        };
        for (i, item) in items.iter().enumerate() {
            match item.get("kind").and_then(Value::as_str) {
                None | Some("") => {}
                Some(k) if k == kind => {}
                Some(k) => {
                    return Err(InputError::BadItem {
                        file: file.into(),
                        what: "item",
                        index: i,
                        message: format!("expected {kind}, found kind {k}"),
                    });
                }
            }
        }
        Ok(items)
    } else if found == kind {
        Ok(vec![v])
    } else {
        Err(wrong(found))
    }
}

fn typed<T: DeserializeOwned>(
    file: &str,
    what: &'static str,
    values: Vec<Value>,
) -> Result<Vec<T>, InputError> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            serde_json::from_value(v).map_err(|e| InputError::BadItem {
                file: file.into(),
                what,
                index,
                message: one_line(e),
            })
        })
        .collect()
}

/// Pods from a saved `kubectl get pod -o json|yaml` (one Pod or a List).
pub fn pods(file: &str, text: &str) -> Result<Vec<Pod>, InputError> {
    let v = decode(file, text)?;
    let items = items(file, v, "Pod", "PodList")?;
    typed(file, "pod", items)
}

/// Events from a saved `kubectl get events -o json|yaml` (one Event or a List).
pub fn events(file: &str, text: &str) -> Result<Vec<Event>, InputError> {
    let v = decode(file, text)?;
    let items = items(file, v, "Event", "EventList")?;
    typed(file, "event", items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_and_name_the_file() {
        for (text, want) in [
            ("{", "p.json: invalid JSON"),
            ("", "p.json: is empty"),
            (
                "kind: Service\n",
                "p.json: expected Pod, found kind Service",
            ),
            ("[1]", "p.json: expected Pod, found something"),
            ("a: [\n", "p.json: invalid YAML"),
            (
                r#"{"kind":"Pod","spec":{"containers":"x"}}"#,
                "p.json: pod #0: invalid type",
            ),
        ] {
            let e = pods("p.json", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?} gave {e:?}");
            assert!(!e.contains('\n'), "{e:?} has a newline");
        }
    }

    #[test]
    fn lists_and_single_objects() {
        let one = r#"{"kind":"Pod","metadata":{"name":"a"}}"#;
        assert_eq!(pods("f", one).unwrap().len(), 1);
        let list = r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}"#;
        assert_eq!(pods("f", list).unwrap().len(), 2);
        let yaml = "kind: EventList\nitems:\n- metadata: {name: e}\n  involvedObject: {kind: Pod, name: a}\n";
        assert_eq!(events("f", yaml).unwrap().len(), 1);
    }
}
