use std::sync::atomic::AtomicUsize;

use futures_util::FutureExt;
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::*;

async fn next_data(body: &mut RelayBody) -> Option<Bytes> {
    let frame = body.frame().await?;
    let Ok(frame) = frame;
    frame.into_data().ok()
}

#[tokio::test]
async fn bytes_arrive_in_order_and_the_body_ends_with_its_relay() {
    let mut body = RelayBody::new(|tx| async move {
        for part in ["a", "b", "c"] {
            assert_eq!(tx.send(Bytes::from_static(part.as_bytes())).await, Ok(()));
        }
    });
    assert!(!body.is_end_stream());
    let mut got = Vec::new();
    while let Some(bytes) = next_data(&mut body).await {
        got.push(bytes);
    }
    assert_eq!(got, ["a", "b", "c"]);
    assert!(body.is_end_stream());
    assert!(next_data(&mut body).await.is_none(), "an ended body stays ended");
}

#[tokio::test]
async fn a_relay_waits_until_the_connection_asks_for_more() {
    let handed = Arc::new(AtomicUsize::new(0));
    let counter = handed.clone();
    let mut body = RelayBody::new(move |tx| async move {
        for _ in 0..3 {
            if tx.send(Bytes::from_static(b"x")).await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"x"[..]));
    assert_eq!(handed.load(Ordering::SeqCst), 0, "the first hand-over completes when the body is polled again");
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"x"[..]));
    assert_eq!(handed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_relay_whose_client_left_finishes_in_a_task_of_its_own_and_learns_the_client_is_gone() {
    let (go, wait) = oneshot::channel::<()>();
    let (report, outcome) = oneshot::channel();
    let mut body = RelayBody::new(move |tx| async move {
        let first = tx.send(Bytes::from_static(b"first")).await;
        // Where a relay waits between hand-overs: an upstream read, an
        // adapter call.
        let _ = wait.await;
        let second = tx.send(Bytes::from_static(b"second")).await;
        let _ = report.send((first, second));
    });
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"first"[..]));
    assert!(body.frame().now_or_never().is_none(), "the relay is waiting");
    drop(body);
    assert_eq!(go.send(()), Ok(()));
    let finished = tokio::time::timeout(std::time::Duration::from_secs(10), outcome).await;
    assert_eq!(finished.ok().and_then(Result::ok), Some((Ok(()), Err(ClientGone))));
}

#[tokio::test]
async fn an_empty_relay_is_an_empty_body() {
    let mut body = RelayBody::new(|_tx| async {});
    assert!(next_data(&mut body).await.is_none());
    assert!(body.is_end_stream());
}
