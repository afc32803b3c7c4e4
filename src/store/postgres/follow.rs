//! How a process hears of appends made by the others: LISTEN on a connection of
//! its own to wake at once, and a poll of the head row as the fallback for a
//! notification lost with a dropped connection. Both only ever raise the head
//! this process publishes; the events themselves are read in position order by
//! whoever waits on it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use crate::store::postgres::tls::Connect;
use crate::store::postgres::{CHANNEL, raise, read_head};

/// How long to wait before connecting again after the listening connection failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// Listens for announced heads for as long as the task lives, reconnecting as
/// needed.
pub async fn listen(connect: Connect, pool: Pool, head: Arc<watch::Sender<u64>>) {
    loop {
        if let Err(e) = listen_once(&connect, &pool, &head).await {
            tracing::warn!(error = %e, "listening for PostgreSQL notifications failed; polling until it reconnects");
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn listen_once(
    connect: &Connect,
    pool: &Pool,
    head: &watch::Sender<u64>,
) -> Result<(), String> {
    let (client, mut connection) = connect
        .config
        .connect(connect.tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (heard, mut announced) = mpsc::unbounded_channel();
    // The connection delivers notifications only while someone polls it.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if heard.send(n.payload().to_owned()).is_err() {
                        return "stopped".to_owned();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.to_string(),
                None => return "the connection closed".to_owned(),
            }
        }
    });
    let _stop_driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    // Whatever was announced before LISTEN took effect is in the head row.
    if let Ok(position) = read_head(pool).await {
        raise(head, position);
    }
    while let Some(payload) = announced.recv().await {
        match payload.parse::<u64>() {
            Ok(position) => raise(head, position),
            Err(_) => tracing::warn!(%payload, "ignoring a malformed head notification"),
        }
    }
    Err("the notification connection ended".to_owned())
}

/// Reads the head row every `every`, for as long as the task lives.
pub async fn poll(pool: Pool, head: Arc<watch::Sender<u64>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match read_head(&pool).await {
            Ok(position) => raise(&head, position),
            Err(e) => tracing::debug!(error = %e, "polling the head failed"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<String>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
