//! Kubernetes manifests for shards: an Indexed Job whose pods each run one
//! shard of a backup or restore (`--shard auto/N`: Kubernetes gives every
//! pod its index in `JOB_COMPLETION_INDEX`), and for a backup the Job that
//! commits it once every shard has finished. `haul job` prints them;
//! `haul backup --shards N --executor kubernetes` applies the Indexed Job.
//!
//! What the pods need, the operator creates once (the printed header says
//! how): a Secret holding the config file (`haul.toml`, mounted read-only
//! at /etc/haul) and a Secret of environment variables for the stores'
//! credentials and the repository's key (AWS_ACCESS_KEY_ID, HAUL_PASSWORD,
//! ...). Nothing secret is ever in the manifests.

use haul_mover::Limits;
use serde_json::{Value, json};

/// Where the config Secret is mounted in the pods.
pub const CONFIG_DIR: &str = "/etc/haul";

/// What the manifests are for.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// A backup into the staged backup `staging`.
    Backup { staging: String },
    /// A restore of `snapshot` (the config's `[restore]` targets).
    Restore { snapshot: String, run: String },
}

/// Everything the manifests are made from.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub kind: JobKind,
    pub shards: u32,
    pub image: String,
    pub namespace: Option<String>,
    /// Secret holding `haul.toml`.
    pub config_secret: String,
    /// Secret of environment variables (credentials, the repository key).
    pub env_secret: String,
    /// Flags every pod gets after the config (tuning).
    pub extra_args: Vec<String>,
    /// The engine's budgets, for the pods' resource requests.
    pub limits: Limits,
}

impl JobSpec {
    /// The Indexed Job's name.
    pub fn name(&self) -> String {
        match &self.kind {
            JobKind::Backup { staging } => format!("haul-backup-{staging}"),
            JobKind::Restore { run, .. } => format!("haul-restore-{run}"),
        }
    }

    fn labels(&self, role: &str) -> Value {
        let (id_key, id) = match &self.kind {
            JobKind::Backup { staging } => ("haul.dev/staging", staging.clone()),
            JobKind::Restore { run, .. } => ("haul.dev/restore", run.clone()),
        };
        json!({
            "app.kubernetes.io/name": "haul",
            "app.kubernetes.io/component": role,
            id_key: id,
        })
    }

    fn metadata(&self, name: String, role: &str) -> Value {
        let mut m = json!({ "name": name, "labels": self.labels(role) });
        if let Some(ns) = &self.namespace {
            m["namespace"] = json!(ns);
        }
        m
    }

    /// A pod template running haul with `args` (after the config and the
    /// tuning flags), resources sized from the limits: the memory budget
    /// plus room for listings, manifests and the runtime.
    fn pod(&self, role: &str, args: Vec<String>) -> Value {
        let mib = (self.limits.memory >> 20) + 256;
        let mut all = vec![
            format!("--config={CONFIG_DIR}/haul.toml"),
            "--json".to_owned(),
            "--no-progress".to_owned(),
        ];
        all.extend(self.extra_args.iter().cloned());
        all.extend(args);
        json!({
            "metadata": { "labels": self.labels(role) },
            "spec": {
                "restartPolicy": "Never",
                "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "fsGroup": 65532 },
                "containers": [{
                    "name": "haul",
                    "image": self.image,
                    "args": all,
                    "envFrom": [{ "secretRef": { "name": self.env_secret } }],
                    "resources": {
                        "requests": { "cpu": self.limits.cpu.max(1).to_string(), "memory": format!("{mib}Mi") },
                        "limits": { "memory": format!("{}Mi", mib * 2) },
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": { "drop": ["ALL"] },
                    },
                    "volumeMounts": [
                        { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
                        { "name": "tmp", "mountPath": "/tmp" },
                    ],
                }],
                "volumes": [
                    { "name": "config", "secret": { "secretName": self.config_secret, "defaultMode": 0o400 } },
                    { "name": "tmp", "emptyDir": {} },
                ],
            },
        })
    }

    /// The Indexed Job: N pods, one shard each, all at once. A pod that
    /// fails is retried (its shard rewrites its own record).
    pub fn indexed_job(&self) -> Value {
        let n = self.shards;
        let args = match &self.kind {
            JobKind::Backup { staging } => vec![
                "backup".to_owned(),
                format!("--shard=auto/{n}"),
                format!("--staging={staging}"),
            ],
            JobKind::Restore { snapshot, .. } => vec![
                "restore".to_owned(),
                snapshot.clone(),
                format!("--shard=auto/{n}"),
            ],
        };
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self.metadata(self.name(), "shard"),
            "spec": {
                "completionMode": "Indexed",
                "completions": n,
                "parallelism": n,
                "backoffLimit": 3 * n,
                "ttlSecondsAfterFinished": 7 * 24 * 3600,
                "template": self.pod("shard", args),
            },
        })
    }

    /// For a backup: the Job that commits it, waiting (up to a day) for
    /// every shard's record; it can start beside the shards.
    pub fn commit_job(&self) -> Option<Value> {
        let JobKind::Backup { staging } = &self.kind else {
            return None;
        };
        let args = vec![
            "backup".to_owned(),
            format!("--commit={staging}"),
            "--wait=24h".to_owned(),
        ];
        Some(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self.metadata(format!("haul-commit-{staging}"), "commit"),
            "spec": {
                "completions": 1,
                "parallelism": 1,
                "backoffLimit": 2,
                "ttlSecondsAfterFinished": 7 * 24 * 3600,
                "template": self.pod("commit", args),
            },
        }))
    }

    /// Every manifest, as one YAML stream with a header that says what to
    /// create first and how to follow the run.
    pub fn yaml(&self) -> String {
        let ns = self
            .namespace
            .as_deref()
            .map_or(String::new(), |n| format!(" -n {n}"));
        let mut out = format!(
            "# haul: {what}, {n} shards as a Kubernetes Indexed Job.\n\
             # First, once: the config file and the credentials as Secrets (never in these manifests):\n\
             #   kubectl{ns} create secret generic {cfg} --from-file=haul.toml=prod.toml\n\
             #   kubectl{ns} create secret generic {env} --from-literal=AWS_ACCESS_KEY_ID=... \\\n\
             #       --from-literal=AWS_SECRET_ACCESS_KEY=... --from-literal=HAUL_PASSWORD=...\n\
             # Then: haul job ... | kubectl{ns} apply -f -\n\
             # Follow: kubectl{ns} get job {name} ; kubectl{ns} logs job/{name}\n",
            what = match &self.kind {
                JobKind::Backup { staging } => format!("backup into staged backup {staging}"),
                JobKind::Restore { snapshot, .. } => format!("restore of snapshot {snapshot}"),
            },
            n = self.shards,
            cfg = self.config_secret,
            env = self.env_secret,
            name = self.name(),
        );
        let mut docs = vec![self.indexed_job()];
        docs.extend(self.commit_job());
        for d in docs {
            out.push_str("---\n");
            yaml(&d, 0, &mut out);
        }
        out
    }
}

/// Writes `v` as block YAML at `indent`: strings in double quotes (JSON's
/// escapes are YAML's), so no value is ever read as another type.
pub fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                out.push_str(&pad);
                out.push_str(&key(k));
                out.push(':');
                match val {
                    Value::Object(o) if !o.is_empty() => {
                        out.push('\n');
                        yaml(val, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        yaml(val, indent, out);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&scalar(val));
                        out.push('\n');
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(o) if !o.is_empty() => {
                        // The item's fields one level in, the first on the dash's line.
                        let mut inner = String::new();
                        yaml(item, indent + 2, &mut inner);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inner[indent + 2..]);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&pad);
                        out.push_str("-\n");
                        yaml(item, indent + 2, out);
                    }
                    _ => {
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&scalar(item));
                        out.push('\n');
                    }
                }
            }
        }
        _ => {
            out.push_str(&pad);
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
    if plain {
        k.to_owned()
    } else {
        Value::from(k).to_string()
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let v = json!({
            "a": 1,
            "b": "x: y",
            "c": [{"d": "e", "f": [1, 2]}, "g"],
            "h": {},
            "i": {"j": true},
        });
        let mut out = String::new();
        yaml(&v, 0, &mut out);
        assert_eq!(
            out,
            "a: 1\nb: \"x: y\"\nc:\n- d: \"e\"\n  f:\n  - 1\n  - 2\n- \"g\"\nh: {}\ni:\n  j: true\n"
        );
    }

    fn spec(kind: JobKind) -> JobSpec {
        JobSpec {
            kind,
            shards: 4,
            image: "haul:test".into(),
            namespace: Some("backups".into()),
            config_secret: "haul-config".into(),
            env_secret: "haul-env".into(),
            extra_args: vec!["--requests=32".into()],
            limits: Limits::default(),
        }
    }

    #[test]
    fn a_backup_is_an_indexed_job_and_a_commit() {
        let s = spec(JobKind::Backup {
            staging: "00c0ffee00c0ffee".into(),
        });
        let job = s.indexed_job();
        assert_eq!(job["spec"]["completionMode"], "Indexed");
        assert_eq!(job["spec"]["completions"], 4);
        assert_eq!(job["spec"]["parallelism"], 4);
        let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            args.as_array()
                .is_some_and(|a| a.contains(&json!("--shard=auto/4")))
        );
        assert!(
            args.as_array()
                .is_some_and(|a| a.contains(&json!("--staging=00c0ffee00c0ffee")))
        );
        let commit = s.commit_job().expect("a commit job");
        let cargs = &commit["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            cargs
                .as_array()
                .is_some_and(|a| a.contains(&json!("--commit=00c0ffee00c0ffee")))
        );
        let text = s.yaml();
        assert_eq!(
            text.matches("\n---\n").count() + usize::from(text.starts_with("---")),
            2
        );
        assert!(!text.contains("AWS_SECRET_ACCESS_KEY=\""));
    }

    #[test]
    fn a_restore_has_no_commit() {
        let s = spec(JobKind::Restore {
            snapshot: "latest".into(),
            run: "0123456789abcdef".into(),
        });
        assert!(s.commit_job().is_none());
        assert_eq!(s.name(), "haul-restore-0123456789abcdef");
    }
}
