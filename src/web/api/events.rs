//! The live event stream (server-sent events), capped in all and per session, ended at logout.

use super::*;

/// The live stream: `alarm` (a transition and the alarm after it), `device` (a device's
/// status changed) and `resync` (this client fell behind; re-read the lists).
/// Event streams at most, in all and per login session.
pub const MAX_STREAMS: usize = 200;

pub const MAX_STREAMS_PER_SESSION: usize = 4;

/// How often a stream checks that its session is still live.
const SESSION_CHECK: Duration = Duration::from_secs(2);

pub async fn events(State(state): State<Shared>, caller: Caller, headers: HeaderMap) -> Response {
    let session = session_id(&headers)
        .filter(|_| caller.csrf.is_some())
        .map(str::to_string);
    let Some(slot) = state.streams.open(session.as_deref()) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many event streams open; close another tab",
        );
    };
    let receiver = state.hub.subscribe();
    let mut check = tokio::time::interval(SESSION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Arc::clone(&state);
    let stream = futures_util::stream::unfold(
        (receiver, check, slot),
        move |(mut receiver, mut check, slot)| {
            let live = Arc::clone(&live);
            let session = session.clone();
            async move {
                loop {
                    tokio::select! {
                        received = receiver.recv() => {
                            let event = match received {
                                Ok(event) => Event::default().event(event.name).data(&event.data),
                                Err(broadcast::error::RecvError::Lagged(_)) => {
                                    Event::default().event("resync").data("{}")
                                }
                                Err(broadcast::error::RecvError::Closed) => return None,
                            };
                            return Some((Ok::<_, Infallible>(event), (receiver, check, slot)));
                        }
                        _ = check.tick() => {
                            // Logged out or expired: the stream ends with the session.
                            if session.as_deref().is_some_and(|id| !live.auth.session_alive(id)) {
                                return None;
                            }
                        }
                    }
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
