//! One open stream: what to send first (the current state, read after registering with the
//! hub so no change can slip between), then the hub's changes, each generation's versions
//! strictly increasing (a change already sent — by the initial read, a catch-up or a
//! duplicate notification — is skipped). A stream of one generation ends after its final
//! state; a user's stream lasts until the client leaves, the hub drops it (too slow) or the
//! daemon stops.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures::Stream;
use uuid::Uuid;

use super::hub::Subscription;
use super::Change;

/// Which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/generations/{id}/events`: event ids are the generation's version.
    One,
    /// `/v1/users/me/events`: event ids are cursors (`updated_at` in unix microseconds).
    User,
}

impl Kind {
    /// The SSE `id:` of `change` on this kind of stream (what `Last-Event-ID` brings back).
    pub fn event_id(self, change: &Change) -> i64 {
        match self {
            Kind::One => change.version,
            Kind::User => change.cursor,
        }
    }
}

struct Follow {
    pending: VecDeque<Arc<Change>>,
    sub: Subscription,
    sent: HashMap<Uuid, i64>,
    kind: Kind,
    done: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Arc<Change>, Self)> {
        loop {
            if self.done {
                return None;
            }
            let change = match self.pending.pop_front() {
                Some(c) => c,
                None => self.sub.rx.recv().await?,
            };
            if self
                .sent
                .get(&change.id)
                .is_some_and(|v| *v >= change.version)
            {
                continue;
            }
            self.sent.insert(change.id, change.version);
            self.done = self.kind == Kind::One && change.is_final;
            metrics::counter!(crate::metrics::EVENTS_SENT).increment(1);
            return Some((change, self));
        }
    }
}

/// The changes to send on a stream: `initial` first, then what the hub delivers to `sub`.
/// `already` holds versions the client had before (from `Last-Event-ID` of a one-generation
/// stream), which are not sent again.
pub fn follow(
    initial: Vec<Arc<Change>>,
    sub: Subscription,
    kind: Kind,
    already: Option<(Uuid, i64)>,
) -> impl Stream<Item = Arc<Change>> + Send + 'static {
    let state = Follow {
        pending: initial.into(),
        sub,
        sent: already.into_iter().collect(),
        kind,
        done: false,
    };
    futures::stream::unfold(state, Follow::next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::hub::{Hub, Limits};
    use futures::StreamExt;

    fn change(id: Uuid, version: i64, is_final: bool) -> Arc<Change> {
        Arc::new(Change {
            id,
            version,
            cursor: version * 10,
            is_final,
            data: format!("{{\"v\":{version}}}").into(),
        })
    }

    #[tokio::test]
    async fn versions_only_increase_and_one_generation_ends_at_its_final_state() {
        let hub = Hub::new(Limits {
            per_user: 4,
            total: 4,
            buffer: 8,
        });
        let id = Uuid::new_v4();
        let sub = hub.subscribe("u", None).unwrap();
        let stream = follow(vec![change(id, 2, false)], sub, Kind::One, Some((id, 1)));
        hub.publish("u", &change(id, 1, false));
        hub.publish("u", &change(id, 2, false));
        hub.publish("u", &change(id, 3, false));
        hub.publish("u", &change(id, 4, true));
        hub.publish("u", &change(id, 5, true));
        let got: Vec<i64> = stream.map(|c| c.version).collect().await;
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(hub.streams(), 0, "the ended stream unregistered");
    }

    #[tokio::test]
    async fn a_user_stream_skips_what_was_replayed_and_goes_on_after_final_states() {
        let hub = Hub::new(Limits {
            per_user: 4,
            total: 4,
            buffer: 8,
        });
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sub = hub.subscribe("u", None).unwrap();
        let mut stream = Box::pin(follow(vec![change(a, 3, true)], sub, Kind::User, None));
        hub.publish("u", &change(a, 3, true));
        hub.publish("u", &change(b, 1, false));
        assert_eq!(stream.next().await.unwrap().id, a);
        let next = stream.next().await.unwrap();
        assert_eq!((next.id, Kind::User.event_id(&next)), (b, 10));
        hub.close();
        assert!(stream.next().await.is_none());
    }
}
