//! The Event watch reads protobuf (`controller::pb`), `analyze` and the
//! JSON path read JSON: the same Events must come out of both. The fixture
//! is one list of 114 Events (those of the real-kubelet fixtures, one
//! with every optional field and one with none) as the API server v1.34 encoded it both ways
//! at one resource version (tests/fixtures/pb/capture.py).

use bytes::Bytes;
use k8s_openapi::api::core::v1::Event;
use serde::Deserialize;
use sidecar_order::controller::pb;
use sidecar_order::controller::wire::WireEvent;

#[derive(Deserialize)]
struct JsonList {
    items: Vec<WireEvent>,
}

fn both() -> (Vec<Event>, pb::EventPage) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pb/");
    let json: JsonList =
        serde_json::from_slice(&std::fs::read(format!("{dir}events.json")).unwrap()).unwrap();
    let body = Bytes::from(std::fs::read(format!("{dir}events.pb")).unwrap());
    let page = pb::event_page(&body).unwrap();
    (json.items.into_iter().map(Event::from).collect(), page)
}

#[test]
fn protobuf_and_json_lists_of_the_same_events_decode_alike() {
    let (json, page) = both();
    assert_eq!(json.len(), 114);
    assert_eq!(page.items.len(), json.len());
    for (j, p) in json.iter().zip(&page.items) {
        assert_eq!(p, j, "{:?}", j.metadata.name);
    }
    assert!(page.resource_version.is_some());
    assert_eq!(page.continue_token, None);
}

/// The fixture covers what the comparison must: the fields kubelets set
/// and those they leave empty, so a field mapped wrong cannot pass unseen.
#[test]
fn the_fixture_holds_set_and_empty_forms_of_every_event_field() {
    let (json, _) = both();
    let any = |f: &dyn Fn(&Event) -> bool| json.iter().any(f);
    assert!(any(&|e| e.event_time.is_some()) && any(&|e| e.event_time.is_none()));
    assert!(any(&|e| e.first_timestamp.is_some()) && any(&|e| e.first_timestamp.is_none()));
    assert!(any(&|e| e.series.is_some()) && any(&|e| e.related.is_some()));
    assert!(any(&|e| e.reporting_component.as_deref() == Some("")));
    assert!(any(&|e| e.reporting_component.as_deref() == Some("kubelet")));
    assert!(any(&|e| e
        .source
        .as_ref()
        .is_some_and(|s| s.component.is_none())));
    assert!(any(&|e| e
        .source
        .as_ref()
        .is_some_and(|s| s.host.is_some())));
    assert!(any(&|e| e.involved_object.field_path.is_some()));
    assert!(any(
        &|e| e.metadata.labels.is_some() && e.metadata.annotations.is_some()
    ));
    assert!(any(&|e| e.count.is_some_and(|c| c > 1)));
    assert!(any(&|e| e.message.is_some() && e.action.is_some()));
    assert!(any(&|e| e
        .event_time
        .as_ref()
        .is_some_and(|t| t.0.subsec_microsecond() != 0)));
}
