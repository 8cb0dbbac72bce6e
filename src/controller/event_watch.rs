//! The Event watch in protobuf (`pb`): list in pages, then watch from the
//! list's version, as the stream of kube-runtime watcher events that the
//! run loop takes from every watch (`Init`, `InitApply`.., `InitDone`, then
//! `Apply`/`Delete`), with its errors, so `default_backoff` paces it.
//!
//! It does what kube-runtime's watcher does for JSON, which has no way to
//! ask for protobuf:
//! - a list of pages (`EVENT_PAGE` Events each); the next page is fetched
//!   while the run loop takes in the one before;
//! - a watch from the version the list or the last event came to, with
//!   bookmarks, restarted where it stopped when the API server ends it
//!   (`WATCH_TIMEOUT_SECS`) or the connection breaks;
//! - a list from the start when the API server no longer has that version
//!   (410 Gone, as a response or a watch ERROR event).

use crate::controller::pb::{self, EventPage, WatchFrame};
use futures::{Stream, StreamExt, stream};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{ListParams, WatchParams};
use kube::client::Body;
use kube::core::{Request, Status};
use kube::runtime::watcher::{Error, Event as WEvent};
use std::pin::Pin;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::io::StreamReader;

/// How long the API server keeps one watch request open (kube's client
/// times a response out after 295 s).
pub const WATCH_TIMEOUT_SECS: u32 = 290;

/// What to watch.
#[derive(Clone, Debug)]
pub struct Settings {
    /// None: every namespace.
    pub namespace: Option<String>,
    pub field_selector: String,
    /// Events per page of the list.
    pub page: u32,
}

impl Settings {
    fn path(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("/api/v1/namespaces/{ns}/events"),
            None => "/api/v1/events".to_string(),
        }
    }
}

/// A watch body split into its frames: each a 4-byte big-endian length,
/// then that many bytes (`LengthDelimitedCodec`'s default form).
type Frames = Pin<Box<dyn Stream<Item = std::io::Result<bytes::BytesMut>> + Send>>;
type PageTask = tokio::task::JoinHandle<Result<EventPage, kube::Error>>;

enum State {
    /// List from the start.
    Empty,
    /// The list's next page, being fetched.
    Page(PageTask),
    /// Watch from `rv`.
    Watch {
        rv: String,
    },
    Watching {
        rv: String,
        frames: Frames,
    },
}

/// A response's error as kube's client reports it: the API server's
/// `Status` (protobuf here), or the HTTP code with the body's text.
async fn api_error(res: http::Response<Body>) -> kube::Error {
    let code = res.status().as_u16();
    let body = match res.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return e,
    };
    let status = match pb::status(&body) {
        Ok(s) => Status::failure(&s.message, &s.reason).with_code(if s.code == 0 {
            code
        } else {
            s.code
        }),
        Err(_) => Status::failure(
            String::from_utf8_lossy(&body).trim(),
            "Failed to parse error data",
        )
        .with_code(code),
    };
    kube::Error::Api(status.boxed())
}

async fn send(
    client: &Client,
    req: http::Request<Vec<u8>>,
) -> Result<http::Response<Body>, kube::Error> {
    let res = client.send(req.map(Body::from)).await?;
    if res.status().is_success() {
        Ok(res)
    } else {
        Err(api_error(res).await)
    }
}

fn undecodable(e: impl std::fmt::Display) -> kube::Error {
    kube::Error::ReadEvents(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        e.to_string(),
    ))
}

async fn fetch_page(
    client: Client,
    s: Settings,
    continue_token: Option<String>,
) -> Result<EventPage, kube::Error> {
    let lp = ListParams {
        field_selector: Some(s.field_selector.clone()),
        limit: Some(s.page),
        continue_token,
        ..ListParams::default()
    };
    let mut req = Request::new(s.path())
        .list(&lp)
        .map_err(kube::Error::BuildRequest)?;
    req.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(pb::PROTOBUF),
    );
    let res = send(&client, req).await?;
    let body = res.into_body().collect().await?.to_bytes();
    pb::event_page(&body).map_err(undecodable)
}

async fn start_watch(client: &Client, s: &Settings, rv: &str) -> Result<Frames, kube::Error> {
    let wp = WatchParams::default()
        .fields(&s.field_selector)
        .timeout(WATCH_TIMEOUT_SECS);
    let mut req = Request::new(s.path())
        .watch(&wp, rv)
        .map_err(kube::Error::BuildRequest)?;
    req.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(pb::PROTOBUF_WATCH),
    );
    let res = send(client, req).await?;
    let body = res
        .into_body()
        .into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    Ok(frames(body))
}

/// A watch body's chunks as its frames, however the chunks cut them.
fn frames(chunks: impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static) -> Frames {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(pb::MAX_FRAME)
        .new_codec();
    Box::pin(FramedRead::new(StreamReader::new(chunks), codec))
}

fn spawn_page(client: &Client, s: &Settings, continue_token: Option<String>) -> PageTask {
    tokio::spawn(fetch_page(client.clone(), s.clone(), continue_token))
}

type Batch = Vec<Result<WEvent<Event>, Error>>;

/// One step: the events it yields (maybe none) and the state after it.
async fn step(client: &Client, s: &Settings, state: State) -> (Batch, State) {
    match state {
        State::Empty => (
            vec![Ok(WEvent::Init)],
            State::Page(spawn_page(client, s, None)),
        ),
        State::Page(task) => {
            let page = match task.await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => return (vec![Err(Error::InitialListFailed(e))], State::Empty),
                Err(e) => {
                    let e = kube::Error::Service(Box::new(e));
                    return (vec![Err(Error::InitialListFailed(e))], State::Empty);
                }
            };
            let mut out: Batch = Vec::with_capacity(page.items.len() + 1);
            out.extend(page.items.into_iter().map(|e| Ok(WEvent::InitApply(e))));
            match (page.continue_token, page.resource_version) {
                // Fetched while the run loop takes this one in.
                (Some(token), _) => (out, State::Page(spawn_page(client, s, Some(token)))),
                (None, Some(rv)) => {
                    out.push(Ok(WEvent::InitDone));
                    (out, State::Watch { rv })
                }
                (None, None) => {
                    out.push(Err(Error::NoResourceVersion));
                    (out, State::Empty)
                }
            }
        }
        State::Watch { rv } => match start_watch(client, s, &rv).await {
            Ok(frames) => (Vec::new(), State::Watching { rv, frames }),
            Err(kube::Error::Api(st)) if st.code == 410 => {
                (vec![Err(Error::WatchError(st))], State::Empty)
            }
            Err(e) => (vec![Err(Error::WatchStartFailed(e))], State::Watch { rv }),
        },
        State::Watching { mut rv, mut frames } => loop {
            let frame = match frames.next().await {
                Some(Ok(frame)) => frame.freeze(),
                // A broken connection, or a frame past `pb::MAX_FRAME`.
                Some(Err(e)) => {
                    let e = kube::Error::ReadEvents(e);
                    return (vec![Err(Error::WatchFailed(e))], State::Watch { rv });
                }
                // The API server ended the watch: again from here.
                None => return (Vec::new(), State::Watch { rv }),
            };
            let ev = match pb::watch_frame(frame) {
                Ok(f) => f,
                Err(e) => {
                    return (
                        vec![Err(Error::WatchFailed(undecodable(e)))],
                        State::Watch { rv },
                    );
                }
            };
            let mut seen = |e: &Event| {
                if let Some(v) = &e.metadata.resource_version {
                    rv.clone_from(v);
                }
            };
            let out = match ev {
                WatchFrame::Added(e) | WatchFrame::Modified(e) => {
                    seen(&e);
                    WEvent::Apply(e)
                }
                WatchFrame::Deleted(e) => {
                    seen(&e);
                    WEvent::Delete(e)
                }
                WatchFrame::Bookmark(v) => {
                    if let Some(v) = v {
                        rv = v;
                    }
                    continue;
                }
                WatchFrame::Error(st) => {
                    let gone = st.code == 410;
                    let status = Status::failure(&st.message, &st.reason).with_code(st.code);
                    let next = if gone {
                        State::Empty
                    } else {
                        State::Watch { rv }
                    };
                    return (vec![Err(Error::WatchError(status.boxed()))], next);
                }
                WatchFrame::Other(_) => continue,
            };
            return (vec![Ok(out)], State::Watching { rv, frames });
        },
    }
}

/// The Events `s` selects, listed then watched, for as long as it is polled.
pub fn watch(
    client: Client,
    s: Settings,
) -> impl Stream<Item = Result<WEvent<Event>, Error>> + Send {
    stream::unfold(State::Empty, move |state| {
        let client = client.clone();
        let s = s.clone();
        async move { Some(step(&client, &s, state).await) }
    })
    .flat_map(stream::iter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::pb::testing;
    use futures::pin_mut;
    use http::{Request as HttpRequest, Response};

    type Handle = tower_test::mock::Handle<HttpRequest<Body>, Response<Body>>;

    /// Answers the next request, which must be a GET whose path and query
    /// contain each of `wants`, with `code` and `body`.
    async fn answer(h: &mut Handle, wants: &[&str], code: u16, body: Vec<u8>) {
        let (req, send) = h.next_request().await.expect("a request");
        let uri = req.uri().to_string();
        for w in wants {
            assert!(uri.contains(w), "{uri} lacks {w}");
        }
        let accept = req.headers()[http::header::ACCEPT]
            .to_str()
            .unwrap()
            .to_string();
        let want = if uri.contains("watch=true") {
            pb::PROTOBUF_WATCH
        } else {
            pb::PROTOBUF
        };
        assert_eq!(accept, want);
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(body))
                .unwrap(),
        );
    }

    fn names(batch: &[Result<WEvent<Event>, Error>]) -> Vec<String> {
        batch
            .iter()
            .map(|r| match r {
                Ok(WEvent::Init) => "Init".into(),
                Ok(WEvent::InitApply(e)) => {
                    format!("InitApply {}", e.metadata.name.as_deref().unwrap_or(""))
                }
                Ok(WEvent::InitDone) => "InitDone".into(),
                Ok(WEvent::Apply(e)) => {
                    format!("Apply {}", e.metadata.name.as_deref().unwrap_or(""))
                }
                Ok(WEvent::Delete(e)) => {
                    format!("Delete {}", e.metadata.name.as_deref().unwrap_or(""))
                }
                Err(Error::WatchError(s)) => format!("WatchError {}", s.code),
                Err(Error::InitialListFailed(kube::Error::Api(s))) => {
                    format!("ListFailed {}", s.code)
                }
                Err(e) => format!("Err {e}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn watch_frames_come_out_whole_whatever_the_chunks() {
        let want: Vec<Vec<u8>> = vec![b"abc".to_vec(), Vec::new(), vec![7; 300]];
        let mut body = Vec::new();
        for f in &want {
            body.extend((f.len() as u32).to_be_bytes());
            body.extend(f);
        }
        for size in [1, 3, 5, 64, body.len()] {
            let chunks: Vec<std::io::Result<bytes::Bytes>> = body
                .chunks(size)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            let got: Vec<Vec<u8>> = frames(stream::iter(chunks))
                .map(|f| f.unwrap().to_vec())
                .collect()
                .await;
            assert_eq!(got, want, "chunks of {size}");
        }
        let oversize = bytes::Bytes::copy_from_slice(&(pb::MAX_FRAME as u32 + 1).to_be_bytes());
        let mut f = frames(stream::iter(vec![Ok(oversize)]));
        assert!(
            f.next().await.unwrap().is_err(),
            "a frame past MAX_FRAME is refused"
        );
    }

    #[tokio::test]
    async fn lists_in_pages_then_watches_from_where_it_came_and_relists_when_gone() {
        let (svc, mut h) = tower_test::mock::pair::<HttpRequest<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let s = Settings {
            namespace: Some("ns".into()),
            field_selector: "involvedObject.kind=Pod".into(),
            page: 2,
        };
        let server = tokio::spawn(async move {
            let base = "/api/v1/namespaces/ns/events?";
            answer(
                &mut h,
                &[base, "limit=2", "fieldSelector=involvedObject.kind%3DPod"],
                200,
                testing::list(&["a", "b"], "10", Some("next")).to_vec(),
            )
            .await;
            answer(
                &mut h,
                &["continue=next"],
                200,
                testing::list(&["c"], "11", None).to_vec(),
            )
            .await;
            // The watch from the list's version: an event, a bookmark, then
            // the API server ends it.
            let mut body = testing::frame("ADDED", "d", "12", 0);
            body.extend(testing::frame("BOOKMARK", "", "15", 0));
            answer(
                &mut h,
                &[
                    "watch=true",
                    "resourceVersion=11",
                    "allowWatchBookmarks=true",
                    "timeoutSeconds=290",
                ],
                200,
                body,
            )
            .await;
            // Again from the bookmark's version: that version is gone.
            let mut body = testing::frame("DELETED", "d", "16", 0);
            body.extend(testing::frame("ERROR", "", "", 410));
            answer(&mut h, &["watch=true", "resourceVersion=15"], 200, body).await;
            // A list from the start; its watch refused as gone too.
            answer(
                &mut h,
                &["limit=2"],
                200,
                testing::list(&["e"], "20", None).to_vec(),
            )
            .await;
            answer(
                &mut h,
                &["watch=true", "resourceVersion=20"],
                410,
                testing::status(410).to_vec(),
            )
            .await;
            answer(&mut h, &["limit=2"], 500, b"overloaded".to_vec()).await;
        });
        let events = watch(client, s);
        pin_mut!(events);
        let mut seen = Vec::new();
        while seen.len() < 15 {
            seen.push(events.next().await.expect("endless"));
        }
        server.await.unwrap();
        let want = [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitDone",
            "Apply d",
            "Delete d",
            "WatchError 410",
            "Init",
            "InitApply e",
            "InitDone",
            "WatchError 410",
            "Init",
            "ListFailed 500",
            "Init",
        ];
        assert_eq!(names(&seen), want);
    }
}
