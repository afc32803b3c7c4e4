//! Fair admission's turns, caps and memory, driven directly.

use std::time::Duration;

use super::*;

fn org(name: &str) -> Class {
    Class::Organization(name.to_owned())
}

fn admission(in_flight: usize, per_class: usize, queued: usize) -> Arc<Admission> {
    Admission::new(
        FairLimits {
            in_flight,
            in_flight_per_class: per_class,
            queued_per_class: queued,
        },
        Duration::from_secs(30),
    )
}

/// Starts waiting for a place for `class`, and returns once it waits.
async fn queue(
    admission: &Arc<Admission>,
    class: Class,
) -> tokio::task::JoinHandle<Result<Permit, ApiError>> {
    let before = admission.queued();
    let waiting = admission.clone();
    let task = tokio::spawn(async move { waiting.acquire(class).await });
    settle(admission, before + 1).await;
    task
}

#[tokio::test]
async fn the_class_that_used_less_goes_before_the_one_that_queued_first() {
    let admission = admission(1, 1, 8);
    let running = admission.acquire(org("flood")).await.unwrap();
    let mut flood = Vec::new();
    for _ in 0..3 {
        flood.push(queue(&admission, org("flood")).await);
    }
    let victim = queue(&admission, org("victim")).await;
    running.finish(Duration::from_millis(5));
    let victim = victim.await.unwrap().unwrap();
    assert_eq!(admission.queued(), 3, "the flood's requests still wait");
    assert!(flood.iter().all(|f| !f.is_finished()));
    victim.finish(Duration::from_micros(10));
    // The victim has nothing more waiting: the flood goes on, in its order.
    for f in flood {
        f.await.unwrap().unwrap().finish(Duration::ZERO);
    }
    assert_eq!(admission.queued(), 0);
}

/// Waits until `n` requests are queued.
async fn settle(admission: &Arc<Admission>, n: usize) {
    while admission.queued() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_class_past_its_queue_is_refused_and_others_are_not() {
    let admission = admission(1, 1, 2);
    let _running = admission.acquire(org("a")).await.unwrap();
    let _one = queue(&admission, org("a")).await;
    let _two = queue(&admission, org("a")).await;
    match admission.acquire(org("a")).await {
        Err(ApiError::TooManyRequests { retry_after, .. }) => assert_eq!(retry_after, 1),
        other => panic!("expected 429, got {other:?}"),
    }
    let _other = queue(&admission, org("b")).await;
    assert_eq!(admission.queued(), 3);
}

#[tokio::test]
async fn one_class_runs_no_more_than_its_share_while_the_server_has_room() {
    let admission = admission(4, 2, 8);
    let _a1 = admission.acquire(org("a")).await.unwrap();
    let a2 = admission.acquire(org("a")).await.unwrap();
    let a3 = queue(&admission, org("a")).await;
    let _b = admission.acquire(org("b")).await.unwrap();
    assert!(!a3.is_finished());
    a2.finish(Duration::ZERO);
    a3.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_request_that_stops_waiting_leaves_no_trace() {
    let admission = admission(1, 1, 8);
    let running = admission.acquire(org("a")).await.unwrap();
    let gone = queue(&admission, org("b")).await;
    gone.abort();
    let _ = gone.await;
    assert_eq!(admission.queued(), 0);
    drop(running);
    // The place is free again: the next request runs at once.
    let next = admission.acquire(org("c")).await.unwrap();
    drop(next);
    let state = admission.lock();
    assert_eq!(state.in_flight, 0);
}

#[tokio::test]
async fn a_wait_ends_at_the_longest_wait_with_429() {
    let admission = Admission::new(
        FairLimits {
            in_flight: 1,
            in_flight_per_class: 1,
            queued_per_class: 8,
        },
        Duration::from_millis(20),
    );
    let _running = admission.acquire(org("a")).await.unwrap();
    assert!(matches!(
        admission.acquire(org("b")).await,
        Err(ApiError::TooManyRequests { .. })
    ));
    assert_eq!(admission.queued(), 0);
}

#[tokio::test]
async fn idle_classes_are_forgotten_past_the_bound() {
    let admission = admission(8, 8, 8);
    for i in 0..(MAX_IDLE_CLASSES + 100) {
        admission
            .acquire(org(&i.to_string()))
            .await
            .unwrap()
            .finish(Duration::ZERO);
    }
    assert!(admission.lock().classes.len() <= MAX_IDLE_CLASSES);
}
