//! The queue between the MQTT loop and the ingest thread, bounded by bytes.
//!
//! The MQTT loop also sends acks and shares its runtime with the HTTP API, so it must never
//! wait for the ingest thread: [`ByteQueue::try_push`] never blocks. When the queue holds
//! its limit a message is shed and counted. Shedding loses nothing: the broker's PUBACK is
//! not durability, the agent keeps every record until the controller's signed ack covers
//! it and sends it again (docs/controller.md, "Back-pressure").

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One message: topic and payload.
pub type Message = (String, Vec<u8>);

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Message>,
    bytes: usize,
    shed: u64,
    shed_bytes: u64,
    closed: bool,
}

/// A multi-producer, single-consumer queue holding at most `max_bytes` of topics and
/// payloads (one message of any size is always let in when the queue is empty).
#[derive(Debug, Clone)]
pub struct ByteQueue {
    inner: Arc<(Mutex<Inner>, Condvar)>,
    max_bytes: usize,
}

/// What [`ByteQueue::recv_timeout`] gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// A message.
    Message(Message),
    /// Nothing came in time.
    Timeout,
    /// The queue was closed and is empty.
    Closed,
}

impl ByteQueue {
    /// An empty queue bounded by `max_bytes`.
    pub fn new(max_bytes: usize) -> ByteQueue {
        ByteQueue {
            inner: Arc::new((Mutex::new(Inner::default()), Condvar::new())),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep going with it.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message unless that would pass the byte limit; `false` when it was shed
    /// (and counted). Never blocks.
    pub fn try_push(&self, msg: Message) -> bool {
        let size = msg.0.len() + msg.1.len();
        let mut q = self.lock();
        if !q.queue.is_empty() && q.bytes + size > self.max_bytes {
            q.shed += 1;
            q.shed_bytes += size as u64;
            return false;
        }
        q.bytes += size;
        q.queue.push_back(msg);
        drop(q);
        self.inner.1.notify_one();
        true
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Recv {
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        loop {
            if let Some(m) = q.queue.pop_front() {
                q.bytes -= m.0.len() + m.1.len();
                return Recv::Message(m);
            }
            if q.closed {
                return Recv::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Recv::Timeout;
            }
            q = self
                .inner
                .1
                .wait_timeout(q, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// No more messages will come: the consumer drains what is queued, then gets `Closed`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }

    /// Messages and bytes shed so far.
    pub fn shed(&self) -> (u64, u64) {
        let q = self.lock();
        (q.shed, q.shed_bytes)
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Message {
        ("t".into(), vec![0; n - 1])
    }

    #[test]
    fn a_full_queue_sheds_and_counts_instead_of_blocking_and_takes_again_once_drained() {
        let q = ByteQueue::new(1_000);
        for _ in 0..10 {
            assert!(q.try_push(msg(100)));
        }
        assert_eq!(q.bytes(), 1_000);
        let started = Instant::now();
        assert!(!q.try_push(msg(100)), "over the limit");
        assert!(!q.try_push(msg(5)));
        assert!(started.elapsed() < Duration::from_millis(50), "never waits");
        assert_eq!(q.shed(), (2, 105));
        assert!(matches!(
            q.recv_timeout(Duration::from_millis(10)),
            Recv::Message(_)
        ));
        assert!(q.try_push(msg(100)), "room again");
        // One message bigger than the whole limit still passes an empty queue.
        let big = ByteQueue::new(10);
        assert!(big.try_push(msg(100)));
    }

    #[test]
    fn the_consumer_waits_for_a_message_and_sees_the_close_after_the_last() {
        let q = ByteQueue::new(1_000);
        assert_eq!(q.recv_timeout(Duration::from_millis(20)), Recv::Timeout);
        let producer = q.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            producer.try_push(msg(10));
            producer.close();
        });
        assert!(matches!(
            q.recv_timeout(Duration::from_secs(5)),
            Recv::Message(_)
        ));
        assert_eq!(q.recv_timeout(Duration::from_secs(5)), Recv::Closed);
        t.join().unwrap();
    }
}
