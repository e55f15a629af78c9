//! The controller under paused time, with a wall clock the test moves (jumps included): grants,
//! expiry, windows, pause and resume, restarts, corrupt state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};

use super::controller::{Clock, Command, Controller};
use super::protocol::{Request, Response};
use super::store::Store;
use crate::config::Forward;
use crate::config::access::{Access, Window};
use crate::tunnel::reconcile::Desired;
use crate::tunnel::state::TunnelState;

/// Wall time = `base` + tokio time elapsed + `jump` (what the test sets the clock by).
struct TestClock {
    base: Timestamp,
    start: tokio::time::Instant,
    jump: Mutex<SignedDuration>,
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        let ran = SignedDuration::try_from(self.start.elapsed()).unwrap();
        self.base + ran + *self.jump.lock().unwrap()
    }
}

fn forward(name: &str, port: u16, access: Option<Access>) -> Forward {
    Forward {
        name: name.into(),
        remote_addr: "localhost".into(),
        remote_port: port,
        target_host: "127.0.0.1".into(),
        target_port: 1,
        limits: Default::default(),
        access,
        tls: None,
        allow: Vec::new(),
        http: None,
        connect: None,
    }
}

fn access(windows: &[&str], grant_max: Option<u64>) -> Option<Access> {
    Some(Access {
        windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
        timezone: "Europe/Berlin".into(),
        grant_max: grant_max.map(Duration::from_secs),
    })
}

struct Agent {
    commands: mpsc::Sender<Command>,
    desired: watch::Receiver<Desired>,
    state: Arc<TunnelState>,
    clock: Arc<TestClock>,
    task: tokio::task::JoinHandle<()>,
    _configured: watch::Sender<Vec<Forward>>,
}

/// A controller on `dir` with `forwards`, its clock starting at `base`.
fn start(dir: &std::path::Path, forwards: Vec<Forward>, base: &str) -> Agent {
    let clock = Arc::new(TestClock {
        base: base.parse().unwrap(),
        start: tokio::time::Instant::now(),
        jump: Mutex::new(SignedDuration::ZERO),
    });
    let state = TunnelState::new(&forwards);
    let mut c = Controller::new(
        Store::open(dir).map(|(s, _)| s).map_err(|e| e.to_string()),
        forwards.clone(),
        state.clone(),
        clock.clone(),
    );
    // These tests span days of paused time; every change they make comes through a command.
    c.reread_every(Duration::from_secs(600));
    let desired = c.desired();
    let configured = watch::Sender::new(forwards);
    let (commands, rx) = mpsc::channel(4);
    let (_, gate) = mpsc::channel(1);
    let task = tokio::spawn(c.run(configured.subscribe(), rx, gate));
    Agent {
        commands,
        desired,
        state,
        clock,
        task,
        _configured: configured,
    }
}

impl Agent {
    async fn ask(&self, request: Request, uid: u32) -> Response {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command {
                request,
                uid,
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap()
    }

    async fn grant(&self, name: &str, seconds: u64) -> Response {
        self.ask(
            Request::Grant {
                forward: name.into(),
                seconds,
                reason: "INC-4711 vendor needs the db".into(),
                by: "alice".into(),
            },
            1000,
        )
        .await
    }

    /// The forwards open now, after the controller has caught up.
    async fn open(&mut self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.desired
            .borrow_and_update()
            .forwards
            .iter()
            .map(|f| f.name.clone())
            .collect()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn stop(self) {
        self.task.abort();
    }
}

const WED_NOON: &str = "2026-11-25T11:00:00Z"; // 12:00 in Berlin

#[tokio::test(start_paused = true)]
async fn a_grant_opens_for_its_time_capped_by_max_and_closes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let fw = vec![
        forward("db", 5000, access(&[], Some(3600))),
        forward("wiki", 5001, None),
    ];
    let mut a = start(dir.path(), fw, WED_NOON);
    assert_eq!(a.open().await, ["wiki"], "grant-only db starts closed");
    let closed = a.state.snapshot().policy_closed;
    assert!(closed[0].why.contains("closed until granted"), "{closed:?}");

    let r = a.grant("db", 3 * 3600).await;
    assert!(r.ok && r.message.contains("capped"), "{r:?}");
    assert_eq!(a.open().await, ["db", "wiki"]);
    let metrics = a.state.metrics.encode();
    let end: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
    assert!(
        metrics.contains(&format!(
            "agent_forward_grant_expiry_seconds{{forward=\"db\"}} {}",
            end.as_second()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("agent_forward_open_by_policy{forward=\"db\"} 1"));
    // One hour (the max), not three.
    a.sleep(Duration::from_secs(3599)).await;
    assert_eq!(a.open().await, ["db", "wiki"]);
    a.sleep(Duration::from_secs(2)).await;
    assert_eq!(a.open().await, ["wiki"], "the grant ended after max");
    let metrics = a.state.metrics.encode();
    assert!(metrics.contains("agent_forward_grant_expiry_seconds{forward=\"db\"} 0"));
    assert!(metrics.contains("agent_forward_open_by_policy{forward=\"db\"} 0"));

    // No reason, an unknown forward, a forward without grants: refused.
    let r = a
        .ask(
            Request::Grant {
                forward: "db".into(),
                seconds: 60,
                reason: "  ".into(),
                by: "alice".into(),
            },
            1000,
        )
        .await;
    assert!(!r.ok && r.message.contains("reason"), "{r:?}");
    assert!(!a.grant("nope", 60).await.ok);
    let r = a.grant("wiki", 60).await;
    assert!(!r.ok && r.message.contains("does not take grants"), "{r:?}");
    a.stop();
}

#[tokio::test(start_paused = true)]
async fn a_clock_set_back_never_lengthens_a_grant_and_forward_shortens_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(
        dir.path(),
        vec![forward("db", 5000, access(&[], Some(4 * 3600)))],
        WED_NOON,
    );
    assert!(a.grant("db", 3600).await.ok);
    a.sleep(Duration::from_secs(600)).await;
    *a.clock.jump.lock().unwrap() = SignedDuration::from_hours(-2);
    a.sleep(Duration::from_secs(3000)).await;
    assert!(
        a.open().await.is_empty(),
        "closed 60 min after granting, clock set back or not"
    );

    assert!(a.grant("db", 3600).await.ok);
    *a.clock.jump.lock().unwrap() = SignedDuration::from_hours(5);
    a.sleep(Duration::from_secs(16)).await;
    assert!(
        a.open().await.is_empty(),
        "a clock moved past the end ends the grant"
    );
    a.stop();
}

#[tokio::test(start_paused = true)]
async fn windows_open_and_close_at_their_edges() {
    let dir = tempfile::tempdir().unwrap();
    // Wednesday 12:00 Berlin; the window is 08:00-18:00 on weekdays.
    let mut a = start(
        dir.path(),
        vec![forward(
            "gitlab",
            5000,
            access(&["Mon-Fri 08:00-18:00"], None),
        )],
        WED_NOON,
    );
    assert_eq!(a.open().await, ["gitlab"]);
    a.sleep(Duration::from_secs(6 * 3600 - 1)).await;
    assert_eq!(a.open().await, ["gitlab"]);
    a.sleep(Duration::from_secs(2)).await;
    assert!(a.open().await.is_empty(), "closed at 18:00");
    let closed = a.state.snapshot().policy_closed;
    assert!(closed[0].why.contains("outside its access windows"));
    assert!(closed[0].until.is_some(), "says when it opens again");
    // Thursday 08:00 Berlin is 14 h after Wednesday 18:00.
    a.sleep(Duration::from_secs(14 * 3600 - 2)).await;
    assert!(a.open().await.is_empty());
    a.sleep(Duration::from_secs(3)).await;
    assert_eq!(a.open().await, ["gitlab"], "open again at 08:00");
    a.stop();
}

#[tokio::test(start_paused = true)]
async fn pause_closes_everything_until_resumed_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fw = vec![forward("wiki", 5001, None), forward("jira", 5002, None)];
    let mut a = start(dir.path(), fw.clone(), WED_NOON);
    let pause = |names: Vec<String>| Request::Pause {
        forwards: names,
        reason: "suspicious traffic".into(),
        by: "bob".into(),
    };
    assert!(a.ask(pause(vec!["jira".into()]), 0).await.ok);
    assert_eq!(a.open().await, ["wiki"]);
    assert!(a.ask(pause(vec![]), 0).await.ok);
    assert!(a.open().await.is_empty());
    a.stop();

    // Restart: still paused.
    let mut a = start(dir.path(), fw, WED_NOON);
    assert!(a.open().await.is_empty(), "a pause survives a restart");
    let r = a
        .ask(
            Request::Resume {
                forwards: vec![],
                reason: None,
                by: "bob".into(),
            },
            0,
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(a.open().await, ["wiki", "jira"]);
    a.stop();
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_a_live_grant_and_never_revives_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let fw = vec![forward("db", 5000, access(&[], Some(4 * 3600)))];
    let a = start(dir.path(), fw.clone(), WED_NOON);
    assert!(a.grant("db", 3600).await.ok);
    a.stop();
    // Restarted 10 minutes later: 50 minutes left.
    let mut b = start(dir.path(), fw.clone(), "2026-11-25T11:10:00Z");
    assert_eq!(b.open().await, ["db"]);
    b.sleep(Duration::from_secs(50 * 60 + 1)).await;
    assert!(b.open().await.is_empty());
    b.stop();
    // Restarted with the clock set back to before the grant ended: still expired.
    let mut c = start(dir.path(), fw, "2026-11-25T11:30:00Z");
    assert!(c.open().await.is_empty(), "an expired grant came back");
    c.stop();
}

#[tokio::test(start_paused = true)]
async fn corrupt_state_fails_closed_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("grants.json"), "{ not json").unwrap();
    std::fs::write(
        dir.path().join("pauses.json"),
        "{\"version\":1,\"pauses\":{}}",
    )
    .unwrap();
    let fw = vec![
        forward("db", 5000, access(&[], Some(3600))),
        forward("gitlab", 5001, access(&["Mon-Fri 08:00-18:00"], Some(3600))),
        forward("wiki", 5002, None),
    ];
    let mut a = start(dir.path(), fw.clone(), WED_NOON);
    assert_eq!(
        a.open().await,
        ["gitlab", "wiki"],
        "only grant-only db closes"
    );
    let snap = a.state.snapshot();
    assert!(!snap.ready());
    assert!(
        snap.access_problem
            .as_deref()
            .unwrap()
            .contains("grants unreadable"),
        "{snap:?}"
    );
    a.stop();

    std::fs::remove_file(dir.path().join("grants.json")).unwrap();
    std::fs::write(dir.path().join("pauses.json"), "garbage").unwrap();
    let mut a = start(dir.path(), fw, WED_NOON);
    assert!(
        a.open().await.is_empty(),
        "unreadable pauses close every forward"
    );
    // `agent resume` replaces the unreadable file.
    let r = a
        .ask(
            Request::Resume {
                forwards: vec![],
                reason: Some("file fixed".into()),
                by: "bob".into(),
            },
            0,
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(a.open().await, ["gitlab", "wiki"]);
    assert!(a.state.snapshot().access_problem.is_none());
    a.stop();
}

#[tokio::test(start_paused = true)]
async fn a_window_edge_on_the_day_clocks_change_comes_at_the_local_time() {
    let dir = tempfile::tempdir().unwrap();
    // Sunday 2026-03-29, Berlin springs forward at 02:00: 08:00 local is 06:00Z, not 07:00Z.
    let mut a = start(
        dir.path(),
        vec![forward(
            "gitlab",
            5000,
            access(&["daily 08:00-18:00"], None),
        )],
        "2026-03-29T05:59:00Z",
    );
    assert!(a.open().await.is_empty());
    a.sleep(Duration::from_secs(59)).await;
    assert!(a.open().await.is_empty());
    a.sleep(Duration::from_secs(2)).await;
    assert_eq!(a.open().await, ["gitlab"], "open at 08:00 CEST = 06:00Z");
    // 18:00 CEST = 16:00Z.
    a.sleep(Duration::from_secs(10 * 3600 - 2)).await;
    assert_eq!(a.open().await, ["gitlab"]);
    a.sleep(Duration::from_secs(3)).await;
    assert!(a.open().await.is_empty(), "closed at 18:00 CEST");
    a.stop();
}
