//! The pause control against a fake cluster, on tokio's paused clock: every
//! wait, retry and timeout is exercised in milliseconds of real time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::*;
use crate::error::{Result, SnapshotError};

/// An in-memory Pachyderm cluster answering kubectl and pachctl.
#[derive(Debug, Default)]
struct Fake(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    deployments: BTreeMap<String, u64>,
    workers: BTreeMap<String, u64>,
    /// Polls of `get pods` that still show pods after a scale to zero.
    pods_linger: u32,
    pod_polls: u32,
    /// Pods never go (a stuck termination).
    pods_stuck: bool,
    /// Scale-ups (resume steps) still to fail.
    failing_scale_ups: u32,
    active_context: String,
    status: String,
    /// `pause-status` polls that say `partially-paused` after `pause`.
    pausing_polls: u32,
    calls: Vec<String>,
    blocking_calls: Vec<String>,
}

fn fail(msg: &str) -> SnapshotError {
    SnapshotError::Pause {
        step: "fake".into(),
        reason: msg.into(),
    }
}

impl Fake {
    fn cluster(pachd: u64, workers: &[(&str, u64)]) -> Arc<Self> {
        let f = Self::default();
        {
            let mut s = f.0.lock().unwrap();
            s.deployments.insert("pachd".into(), pachd);
            for (n, r) in workers {
                s.workers.insert((*n).into(), *r);
            }
            s.active_context = "prod".into();
            s.status = "unpaused".into();
        }
        Arc::new(f)
    }

    fn with(self: &Arc<Self>, f: impl FnOnce(&mut State)) -> Arc<Self> {
        f(&mut self.0.lock().unwrap());
        self.clone()
    }

    fn state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.0.lock().unwrap())
    }

    fn answer(&self, program: Program, args: &[String]) -> Result<String> {
        let mut s = self.0.lock().unwrap();
        s.calls.push(command_line(program, args));
        // Drop kubectl's --context/--namespace.
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        while matches!(a.first(), Some(&"--context") | Some(&"--namespace")) {
            a.drain(..2);
        }
        match (program, a.as_slice()) {
            (Program::Kubectl, ["get", "deployment", name, "-o", "json"]) => {
                let r = s
                    .deployments
                    .get(*name)
                    .ok_or_else(|| fail("no such deployment"))?;
                Ok(format!(r#"{{"spec":{{"replicas":{r}}}}}"#))
            }
            (Program::Kubectl, ["get", "replicationcontrollers", "-l", _, "-o", "json"]) => {
                let items: Vec<String> = s
                    .workers
                    .iter()
                    .map(|(n, r)| {
                        format!(r#"{{"metadata":{{"name":"{n}"}},"spec":{{"replicas":{r}}}}}"#)
                    })
                    .collect();
                Ok(format!(r#"{{"items":[{}]}}"#, items.join(",")))
            }
            (Program::Kubectl, ["scale", kind, name, replicas]) => {
                let n: u64 = replicas
                    .strip_prefix("--replicas=")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| fail("bad --replicas"))?;
                if n > 0 && s.failing_scale_ups > 0 {
                    s.failing_scale_ups -= 1;
                    return Err(fail("the API server is unavailable"));
                }
                let map = match *kind {
                    "deployment" => &mut s.deployments,
                    "replicationcontroller" => &mut s.workers,
                    _ => return Err(fail("bad kind")),
                };
                *map.get_mut(*name).ok_or_else(|| fail("no such workload"))? = n;
                Ok(String::new())
            }
            (Program::Kubectl, ["get", "pods", "-l", _, "-o", "json"]) => {
                s.pod_polls += 1;
                let running = s
                    .deployments
                    .values()
                    .chain(s.workers.values())
                    .any(|r| *r > 0);
                let gone = !running && !s.pods_stuck && s.pod_polls > s.pods_linger;
                Ok(if gone {
                    r#"{"items":[]}"#.into()
                } else {
                    r#"{"items":[{"metadata":{"name":"pachd-0"}}]}"#.into()
                })
            }
            (Program::Pachctl, ["config", "get", "active-context"]) => Ok(s.active_context.clone()),
            (Program::Pachctl, ["enterprise", "pause-status"]) => {
                if s.status == "partially-paused" {
                    if s.pausing_polls == 0 {
                        s.status = "paused".into();
                    } else {
                        s.pausing_polls -= 1;
                    }
                }
                Ok(format!("{}\n", s.status))
            }
            (Program::Pachctl, ["enterprise", "pause"]) => {
                s.status = "partially-paused".into();
                Ok(String::new())
            }
            (Program::Pachctl, ["enterprise", "unpause"]) => {
                s.status = "unpaused".into();
                Ok(String::new())
            }
            _ => Err(fail("unexpected call")),
        }
    }
}

impl Runner for Fake {
    fn run<'a>(&'a self, program: Program, args: &'a [String]) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            // Every call takes a little (virtual) time, as a real one does.
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.answer(program, args)
        })
    }

    fn run_blocking(&self, program: Program, args: &[String]) -> std::result::Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .blocking_calls
            .push(command_line(program, args));
        self.answer(program, args)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn spec(method: PauseMethod) -> PauseSpec {
    PauseSpec {
        method,
        context: Some("prod".into()),
        namespace: Some("pach".into()),
        timeout: Duration::from_secs(300),
    }
}

fn setup(method: PauseMethod, fake: &Arc<Fake>) -> (Box<dyn ClusterControl>, PauseGuard) {
    let runner: Arc<dyn Runner> = fake.clone();
    (
        control(spec(method), runner.clone()),
        PauseGuard::new(&spec(method), runner),
    )
}

#[tokio::test(start_paused = true)]
async fn kubectl_waits_for_the_pods_and_resumes_the_exact_counts() {
    let fake =
        Fake::cluster(2, &[("pipeline-a-v1", 3), ("pipeline-b-v1", 0)]).with(|s| s.pods_linger = 8);
    let (cluster, guard) = setup(PauseMethod::Kubectl, &fake);
    let check = cluster.check().await.unwrap();
    assert!(!check.already_paused);
    assert_eq!(check.workloads.len(), 3);

    let t = Instant::now();
    cluster.pause(&guard).await.unwrap();
    // Eight polls saw pods, each followed by a POLL's wait.
    assert!(t.elapsed() >= spec::POLL * 8, "{:?}", t.elapsed());
    assert!(t.elapsed() < spec::POLL * 10, "{:?}", t.elapsed());
    assert_eq!(
        guard.scaled(),
        vec![
            Workload {
                kind: WorkloadKind::Deployment,
                name: "pachd".into(),
                replicas: 2
            },
            Workload {
                kind: WorkloadKind::ReplicationController,
                name: "pipeline-a-v1".into(),
                replicas: 3
            },
        ],
        "a worker at 0 is neither scaled nor recorded"
    );
    assert!(fake.state(|s| s.deployments["pachd"] == 0 && s.workers["pipeline-a-v1"] == 0));
    assert_eq!(
        guard.manual_commands()[0],
        "kubectl --context prod --namespace pach scale deployment pachd --replicas=2"
    );

    guard.resume().await.unwrap();
    fake.state(|s| {
        assert_eq!(s.deployments["pachd"], 2);
        assert_eq!(s.workers["pipeline-a-v1"], 3);
        assert_eq!(s.workers["pipeline-b-v1"], 0);
    });
    // A second resume (every exit path calls it) changes nothing.
    let calls = fake.state(|s| s.calls.len());
    guard.resume().await.unwrap();
    assert_eq!(fake.state(|s| s.calls.len()), calls);
}

#[tokio::test(start_paused = true)]
async fn pods_that_never_stop_time_out_and_the_guard_still_resumes() {
    let fake = Fake::cluster(1, &[("pipeline-a-v1", 2)]).with(|s| s.pods_stuck = true);
    let (cluster, guard) = setup(PauseMethod::Kubectl, &fake);
    let t = Instant::now();
    let err = cluster.pause(&guard).await.unwrap_err();
    assert!(
        matches!(err, SnapshotError::PauseTimeout { seconds: 300, .. }),
        "{err}"
    );
    assert!(t.elapsed() >= Duration::from_secs(300));
    assert!(t.elapsed() < Duration::from_secs(301), "{:?}", t.elapsed());
    guard.resume().await.unwrap();
    assert!(fake.state(|s| s.deployments["pachd"] == 1 && s.workers["pipeline-a-v1"] == 2));
}

#[tokio::test(start_paused = true)]
async fn resume_steps_are_retried_then_reported_with_the_commands_to_run() {
    // Two failures: the third attempt of the first step succeeds.
    let fake = Fake::cluster(2, &[("pipeline-a-v1", 1)]);
    let (cluster, guard) = setup(PauseMethod::Kubectl, &fake);
    cluster.pause(&guard).await.unwrap();
    fake.with(|s| s.failing_scale_ups = 2);
    let t = Instant::now();
    guard.resume().await.unwrap();
    assert!(t.elapsed() >= spec::RESUME_RETRY_DELAY * 2);
    assert!(fake.state(|s| s.deployments["pachd"] == 2 && s.workers["pipeline-a-v1"] == 1));

    // Every attempt fails: both steps are still tried, both are reported.
    let fake = Fake::cluster(2, &[("pipeline-a-v1", 1)]);
    let (cluster, guard) = setup(PauseMethod::Kubectl, &fake);
    cluster.pause(&guard).await.unwrap();
    fake.with(|s| s.failing_scale_ups = u32::MAX);
    let before = fake.state(|s| s.calls.len());
    match guard.resume().await {
        Err(SnapshotError::ResumeFailed { commands, reasons }) => {
            assert_eq!(commands.len(), 2, "{commands:?}");
            assert!(
                commands[1].ends_with("scale replicationcontroller pipeline-a-v1 --replicas=1")
            );
            assert!(
                reasons.iter().all(|r| r.contains("unavailable")),
                "{reasons:?}"
            );
        }
        other => panic!("expected ResumeFailed, got {other:?}"),
    }
    assert_eq!(
        fake.state(|s| s.calls.len()) - before,
        2 * spec::RESUME_ATTEMPTS as usize
    );
}

#[tokio::test(start_paused = true)]
async fn pachctl_checks_the_context_waits_for_paused_and_unpaused() {
    let fake = Fake::cluster(1, &[]).with(|s| s.pausing_polls = 3);
    let (cluster, guard) = setup(PauseMethod::Pachctl, &fake);
    assert_eq!(
        cluster.check().await.unwrap().context.as_deref(),
        Some("prod")
    );
    cluster.pause(&guard).await.unwrap();
    assert_eq!(fake.state(|s| s.status.clone()), "paused");
    assert_eq!(guard.manual_commands(), vec!["pachctl enterprise unpause"]);
    guard.resume().await.unwrap();
    assert_eq!(fake.state(|s| s.status.clone()), "unpaused");

    let other = Fake::cluster(1, &[]).with(|s| s.active_context = "staging".into());
    let (cluster, _guard) = setup(PauseMethod::Pachctl, &other);
    assert!(matches!(
        cluster.check().await,
        Err(SnapshotError::WrongContext { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn an_already_paused_cluster_is_left_paused() {
    let fake = Fake::cluster(1, &[]).with(|s| s.status = "paused".into());
    let (cluster, guard) = setup(PauseMethod::Pachctl, &fake);
    assert!(cluster.check().await.unwrap().already_paused);
    cluster.pause(&guard).await.unwrap();
    assert!(!guard.paused_anything());
    guard.resume().await.unwrap();
    assert_eq!(fake.state(|s| s.status.clone()), "paused");
}

#[tokio::test(start_paused = true)]
async fn a_guard_dropped_without_resume_resumes_synchronously() {
    let fake = Fake::cluster(3, &[("pipeline-a-v1", 2)]);
    let (cluster, guard) = setup(PauseMethod::Kubectl, &fake);
    cluster.pause(&guard).await.unwrap();
    drop(guard);
    fake.state(|s| {
        assert_eq!(s.blocking_calls.len(), 2, "{:?}", s.blocking_calls);
        assert_eq!(s.deployments["pachd"], 3);
        assert_eq!(s.workers["pipeline-a-v1"], 2);
    });
}
