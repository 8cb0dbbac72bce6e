//! A stream held back until a gate opens, read ahead meanwhile.
//!
//! At start-up the Event list is taken in only once the pods are listed
//! (an event before its pod waits in `pending`, which is bounded). Listing
//! the Events only then made a restart wait for two lists one after the
//! other; held, the Event list is read while the pods are listed, and its
//! items wait here, up to `cap` of them. Past `cap` the stream is not read
//! further until the gate opens: nothing is dropped, the rest only comes
//! later, as it did before.

use futures::future::BoxFuture;
use futures::stream::{Fuse, Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// `inner`, read ahead into a buffer of at most `cap` items while `gate`
/// is pending, and passed on in order once it is ready.
pub fn until<S: Stream + Unpin>(inner: S, gate: BoxFuture<'static, ()>, cap: usize) -> Held<S> {
    Held {
        inner: inner.fuse(),
        gate: Some(gate),
        held: VecDeque::new(),
        cap,
    }
}

pub struct Held<S: Stream> {
    inner: Fuse<S>,
    /// None once open.
    gate: Option<BoxFuture<'static, ()>>,
    held: VecDeque<S::Item>,
    cap: usize,
}

// Nothing in it is pinned: the inner stream is Unpin, its items are moved.
impl<S: Stream + Unpin> Unpin for Held<S> {}

impl<S: Stream + Unpin> Stream for Held<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if let Some(gate) = this.gate.as_mut() {
            if gate.as_mut().poll(cx).is_ready() {
                this.gate = None;
            } else {
                // Read ahead; the gate's waker (and the inner stream's,
                // while there is room) wakes this again.
                while this.held.len() < this.cap {
                    match this.inner.poll_next_unpin(cx) {
                        Poll::Ready(Some(item)) => this.held.push_back(item),
                        Poll::Ready(None) | Poll::Pending => break,
                    }
                }
                return Poll::Pending;
            }
        }
        if let Some(item) = this.held.pop_front() {
            if this.held.is_empty() {
                // Its memory goes once it is drained.
                this.held = VecDeque::new();
            }
            return Poll::Ready(Some(item));
        }
        this.inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::stream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A gate that opens once its sender says so (or is gone).
    fn gate() -> (
        tokio::sync::watch::Sender<bool>,
        futures::future::BoxFuture<'static, ()>,
    ) {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let gate = async move {
            let _ = rx.wait_for(|open| *open).await;
        }
        .boxed();
        (tx, gate)
    }

    /// A stream of 0..n that counts how many of its items were read.
    fn counted(n: usize) -> (impl Stream<Item = usize> + Unpin, Arc<AtomicUsize>) {
        let read = Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let s = stream::iter(0..n).map(move |i| {
            r.fetch_add(1, Ordering::SeqCst);
            i
        });
        (s, read)
    }

    #[tokio::test]
    async fn reads_ahead_up_to_the_cap_and_passes_everything_on_in_order_once_open() {
        let (tx, gate) = gate();
        let (inner, read) = counted(10);
        let mut held = until(inner, gate, 4);
        // Closed: nothing comes out, and at most `cap` items were read.
        assert!(held.next().now_or_never().is_none());
        assert_eq!(read.load(Ordering::SeqCst), 4);
        assert_eq!(held.held.len(), 4);
        // Polled again while closed: still no further than the cap.
        assert!(held.next().now_or_never().is_none());
        assert_eq!(read.load(Ordering::SeqCst), 4);
        tx.send_replace(true);
        let all: Vec<usize> = held.collect().await;
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_gate_whose_sender_is_gone_opens() {
        let (tx, gate) = gate();
        let (inner, _) = counted(3);
        let held = until(inner, gate, 100);
        drop(tx);
        assert_eq!(held.collect::<Vec<_>>().await, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn an_inner_stream_that_ends_while_closed_ends_after_its_items() {
        let (tx, gate) = gate();
        let (inner, read) = counted(2);
        let mut held = until(inner, gate, 100);
        assert!(held.next().now_or_never().is_none());
        assert_eq!(read.load(Ordering::SeqCst), 2);
        tx.send_replace(true);
        assert_eq!(held.next().await, Some(0));
        assert_eq!(held.next().await, Some(1));
        assert_eq!(held.next().await, None);
    }
}
