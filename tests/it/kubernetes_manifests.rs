//! examples/kubernetes: the fields that decide whether the agent actually works in a cluster,
//! checked across files (a schema validator, run by .ci/kubernetes-validate.sh, checks each
//! object's shape but not that the probes hit the port agent.yaml listens on, or that the key
//! lands where agent.yaml looks for it). The ConfigMap's agent.yaml is validated by the agent's
//! own parser, so the example cannot drift from the config contract. The access state's contract
//! (README "Kubernetes"): one replica, `Recreate`, the state on a PersistentVolumeClaim in a
//! folder the agent makes itself, and a pause Job that writes to that same state as the agent's
//! user.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use agent::config::{Config, LogFormat};
use serde_yaml::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubernetes");
const UID: i64 = 65532;

fn load(name: &str) -> Value {
    let path = Path::new(DIR).join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `v` at a path of keys (`spec/template/spec`); list items by index (`containers/0`). Keys
/// may contain dots (`data/agent.yaml`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('/') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(key),
        }
        .unwrap_or_else(|| panic!("missing `{path}` (at `{key}`)"));
    }
    cur
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn int_at(v: &Value, path: &str) -> i64 {
    at(v, path)
        .as_i64()
        .unwrap_or_else(|| panic!("`{path}` is not an integer"))
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a Vec<Value> {
    at(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("`{path}` is not a list"))
}

fn named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|x| x.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no entry named {name}"))
}

fn pod_spec(deployment: &Value) -> &Value {
    at(deployment, "spec/template/spec")
}

/// Every container, init containers included, of a Deployment or a Job.
fn all_containers(deployment: &Value) -> Vec<&Value> {
    let spec = pod_spec(deployment);
    let mut all: Vec<&Value> = seq(spec, "containers").iter().collect();
    if let Some(init) = spec.get("initContainers").and_then(Value::as_sequence) {
        all.extend(init.iter());
    }
    all
}

fn agent_container(deployment: &Value) -> &Value {
    named(seq(pod_spec(deployment), "containers"), "agent")
}

/// The ConfigMap's agent.yaml, parsed by the agent itself as if it sat at `AGENT_CONFIG`.
fn agent_config(deployment: &Value) -> Config {
    let configmap = load("configmap.yaml");
    let text = str_at(&configmap, "data/agent.yaml");
    Config::parse(&config_path(deployment), text)
        .unwrap_or_else(|e| panic!("configmap.yaml agent.yaml is not a valid agent.yaml:\n{e}"))
}

fn config_path(deployment: &Value) -> PathBuf {
    let env = seq(agent_container(deployment), "env");
    PathBuf::from(str_at(named(env, "AGENT_CONFIG"), "value"))
}

/// "128Mi", "64M", "1Gi" -> bytes.
fn quantity_bytes(q: &str) -> u64 {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().expect("quantity") * factor;
        }
    }
    q.parse().expect("quantity")
}

/// The resolved mount path of volume `volume` in container `c` (and its subPath, if any).
fn mount_of<'a>(c: &'a Value, volume: &str) -> (&'a str, Option<&'a str>) {
    let m = seq(c, "volumeMounts")
        .iter()
        .find(|m| m.get("name").and_then(Value::as_str) == Some(volume))
        .unwrap_or_else(|| panic!("container does not mount volume {volume}"));
    (
        str_at(m, "mountPath"),
        m.get("subPath").and_then(Value::as_str),
    )
}

#[test]
fn one_replica_recreated_by_default_and_two_only_with_a_read_write_many_volume() {
    let d = load("deployment.yaml");
    assert_eq!(str_at(&d, "kind"), "Deployment");
    // Two agents must share one access state, or a pause given to one leaves the ports to the
    // other: by default one replica on a ReadWriteOnce volume...
    assert_eq!(
        int_at(&d, "spec/replicas"),
        1,
        "two only with ReadWriteMany"
    );
    // ...stopped before its successor starts: the volume attaches to one node at a time.
    assert_eq!(str_at(&d, "spec/strategy/type"), "Recreate");
    assert!(
        at(&d, "spec/strategy").get("rollingUpdate").is_none(),
        "Recreate takes no rollingUpdate"
    );
    // The old pod keeps forwarding while it is told to stop (with two replicas, while the new
    // ones connect), and the grace period covers that and the agent's own stop.
    let agent = agent_container(&d);
    let sleep = int_at(agent, "lifecycle/preStop/sleep/seconds");
    assert!(
        sleep >= 10,
        "preStop sleep {sleep}s is too short to let new pods connect"
    );
    let grace = int_at(pod_spec(&d), "terminationGracePeriodSeconds");
    assert!(
        grace >= sleep + 15,
        "terminationGracePeriodSeconds {grace} must cover the preStop sleep ({sleep}s) and the agent's own stop"
    );
    // The two-replica layout is spelled out where someone would change `replicas`: ReadWriteMany,
    // and the rollout strategy that can finish with one ready pod out of two.
    let text = fs::read_to_string(Path::new(DIR).join("deployment.yaml")).unwrap();
    for needle in [
        "replicas: 2",
        "ReadWriteMany",
        "type: RollingUpdate",
        "maxSurge: 2, maxUnavailable: 2",
    ] {
        assert!(
            text.contains(needle),
            "deployment.yaml's comments no longer say how to run two replicas ({needle})"
        );
    }
}

#[test]
fn the_access_state_is_on_the_claim_in_a_folder_the_agent_makes() {
    let d = load("deployment.yaml");
    let pvc = load("pvc.yaml");
    assert_eq!(str_at(&pvc, "kind"), "PersistentVolumeClaim");
    let modes: Vec<&str> = seq(&pvc, "spec/accessModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(modes, ["ReadWriteOnce"], "one replica's volume");
    at(&pvc, "spec/resources/requests/storage");

    // The state volume is that claim, not an emptyDir (a rescheduled pod would forget every
    // pause), and no other volume is an emptyDir either (no second copy of the key).
    let volumes = seq(pod_spec(&d), "volumes");
    assert!(
        volumes.iter().all(|v| v.get("emptyDir").is_none()),
        "no emptyDir: the state must outlive the pod"
    );
    let state = volumes
        .iter()
        .find(|v| v.get("persistentVolumeClaim").is_some())
        .expect("a persistentVolumeClaim volume");
    assert_eq!(
        str_at(state, "persistentVolumeClaim/claimName"),
        str_at(&pvc, "metadata/name")
    );
    let agent = agent_container(&d);
    let (mount, sub) = mount_of(agent, str_at(state, "name"));
    assert_eq!(sub, None, "the whole volume");

    // AGENT_STATE_DIR is a folder strictly inside the mount: with fsGroup the volume's root is
    // root-owned and group-writable, which the agent refuses; a folder it creates is its own.
    let env = seq(agent, "env");
    let state_dir = Path::new(str_at(named(env, "AGENT_STATE_DIR"), "value"));
    assert!(
        state_dir.starts_with(mount) && state_dir != Path::new(mount),
        "AGENT_STATE_DIR {} must be a subfolder of the state volume's mount {mount}",
        state_dir.display()
    );
    // The image's AGENT_STATE_DIR is the mount itself: the Deployment's env overrides it...
    let containerfile =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile")).unwrap();
    assert!(containerfile.contains("ENV AGENT_STATE_DIR=/var/lib/agent"));
    assert_eq!(mount, "/var/lib/agent", "the image's state folder");
    // ...and agent.yaml must not set state_dir, which would win over AGENT_STATE_DIR.
    let configmap = load("configmap.yaml");
    let raw: Value = serde_yaml::from_str(str_at(&configmap, "data/agent.yaml")).unwrap();
    assert!(
        raw.get("state_dir").is_none(),
        "configmap.yaml's agent.yaml sets state_dir: AGENT_STATE_DIR would be ignored"
    );

    // The kubelet would make the agent's 0700 folder group-writable again at every mount.
    assert_eq!(
        str_at(pod_spec(&d), "securityContext/fsGroupChangePolicy"),
        "OnRootMismatch"
    );
}

#[test]
fn the_pause_job_writes_the_same_state_as_the_agent_would() {
    let d = load("deployment.yaml");
    let job = load("pause-job.yaml");
    assert_eq!(str_at(&job, "kind"), "Job");
    let spec = pod_spec(&job);
    assert_eq!(str_at(spec, "restartPolicy"), "Never");
    assert_eq!(
        at(spec, "automountServiceAccountToken").as_bool(),
        Some(false)
    );

    // Same user, same group, same fsGroup handling: its files are the agent's own.
    assert_eq!(
        at(spec, "securityContext"),
        at(pod_spec(&d), "securityContext"),
        "pod securityContext"
    );
    let containers = seq(spec, "containers");
    assert_eq!(containers.len(), 1);
    let pause = &containers[0];
    let agent = agent_container(&d);
    assert_eq!(
        at(pause, "securityContext"),
        at(agent, "securityContext"),
        "container securityContext"
    );
    assert_eq!(
        str_at(pause, "image"),
        str_at(agent, "image"),
        "the same binary (kustomize's images: does not reach the Job)"
    );

    // `agent pause --reason ...`, with the Deployment's AGENT_CONFIG and AGENT_STATE_DIR.
    let args: Vec<&str> = seq(pause, "args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"pause"), "{args:?}");
    assert!(
        args.contains(&"--reason"),
        "a pause needs a reason: {args:?}"
    );
    for var in ["AGENT_CONFIG", "AGENT_STATE_DIR"] {
        assert_eq!(
            str_at(named(seq(pause, "env"), var), "value"),
            str_at(named(seq(agent, "env"), var), "value"),
            "{var}"
        );
    }

    // The same claim and the same ConfigMap, mounted where the agent has them; nothing else
    // (no key: `agent pause` does not sign in anywhere).
    let volumes = |pod: &Value| -> BTreeMap<String, Value> {
        seq(pod_spec(pod), "volumes")
            .iter()
            .map(|v| (str_at(v, "name").to_string(), v.clone()))
            .collect()
    };
    let (job_volumes, agent_volumes) = (volumes(&job), volumes(&d));
    assert!(
        job_volumes.values().all(|v| v.get("secret").is_none()),
        "the Job needs no key"
    );
    let mut kinds = Vec::new();
    for (name, v) in &job_volumes {
        assert_eq!(
            Some(v),
            agent_volumes.get(name),
            "volume {name}: not the Deployment's"
        );
        assert_eq!(mount_of(pause, name), mount_of(agent, name), "mount {name}");
        kinds.extend(
            ["persistentVolumeClaim", "configMap"]
                .into_iter()
                .filter(|k| v.get(k).is_some()),
        );
    }
    kinds.sort_unstable();
    assert_eq!(kinds, ["configMap", "persistentVolumeClaim"]);

    // Not one of the Deployment's pods: `kubectl exec deploy/agent` must never pick it.
    let selector = at(&d, "spec/selector/matchLabels")
        .as_mapping()
        .expect("matchLabels");
    let labels = at(&job, "spec/template/metadata/labels");
    assert!(
        !selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Job's pod matches the Deployment's selector"
    );
}

#[test]
fn restrictive_security_context_everywhere() {
    for file in ["deployment.yaml", "pause-job.yaml"] {
        restrictive_security_context(file);
    }
}

fn restrictive_security_context(file: &str) {
    let d = load(file);
    let pod = at(pod_spec(&d), "securityContext");
    assert_eq!(at(pod, "runAsNonRoot").as_bool(), Some(true));
    assert_eq!(int_at(pod, "runAsUser"), UID, "the image's user");
    assert_eq!(int_at(pod, "fsGroup"), UID, "makes the key Secret readable");
    assert_eq!(str_at(pod, "seccompProfile/type"), "RuntimeDefault");
    assert_eq!(
        at(pod_spec(&d), "automountServiceAccountToken").as_bool(),
        Some(false),
        "the agent never talks to the API server"
    );
    for c in all_containers(&d) {
        let name = str_at(c, "name");
        let sc = at(c, "securityContext");
        assert_eq!(
            at(sc, "allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(
            at(sc, "readOnlyRootFilesystem").as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(at(sc, "runAsNonRoot").as_bool(), Some(true), "{name}");
        let drop: Vec<&str> = seq(sc, "capabilities/drop")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(drop, ["ALL"], "{name}: capabilities/drop");
        assert!(
            sc.get("privileged").and_then(Value::as_bool) != Some(true),
            "{name}"
        );
        if let Some(uid) = sc.get("runAsUser") {
            assert_eq!(uid.as_i64(), Some(UID), "{name}");
        }
    }
}

#[test]
fn probes_hit_the_admin_port_that_agent_yaml_listens_on() {
    let d = load("deployment.yaml");
    let config = agent_config(&d);
    let listen = config
        .admin_listen
        .expect("admin.listen must not be \"off\": the probes need it");
    assert!(
        listen.ip().is_unspecified(),
        "admin.listen {listen}: probes connect to the pod IP, so listen on 0.0.0.0 (127.0.0.1 only serves the container itself)"
    );
    let agent = agent_container(&d);
    let ports: BTreeMap<&str, i64> = seq(agent, "ports")
        .iter()
        .map(|p| (str_at(p, "name"), int_at(p, "containerPort")))
        .collect();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = at(agent, &format!("{probe}/httpGet"));
        assert_eq!(str_at(get, "path"), path, "{probe}");
        let port = match at(get, "port") {
            Value::Number(n) => n.as_i64().unwrap(),
            Value::String(name) => *ports
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{probe}: no container port named {name}")),
            other => panic!("{probe}: port {other:?}"),
        };
        assert_eq!(
            port,
            i64::from(listen.port()),
            "{probe} port vs agent.yaml admin.listen"
        );
    }
}

#[test]
fn config_and_key_land_where_agent_yaml_expects_them() {
    let d = load("deployment.yaml");
    let spec = pod_spec(&d);
    let agent = agent_container(&d);
    let config = agent_config(&d);
    assert_eq!(
        config.log.format,
        LogFormat::Json,
        "one JSON object per line for log collectors"
    );

    // AGENT_CONFIG is exactly the file mounted from the ConfigMap's agent.yaml key.
    let volumes = seq(spec, "volumes");
    let config_volume = volumes
        .iter()
        .find(|v| v.get("configMap").is_some())
        .expect("a configMap volume");
    let configmap = load("configmap.yaml");
    assert_eq!(
        str_at(config_volume, "configMap/name"),
        str_at(&configmap, "metadata/name")
    );
    let (mount, sub) = mount_of(agent, str_at(config_volume, "name"));
    assert_eq!(sub, Some("agent.yaml"));
    assert_eq!(Path::new(mount), config_path(&d), "AGENT_CONFIG vs mount");

    // identity (relative to agent.yaml's folder) is in the Secret, mounted as it is: no init
    // container, no copy of the key (the agent accepts a root-owned 0440 key: only root may share a key with a group).
    assert!(
        spec.get("initContainers").is_none(),
        "no init container: the agent reads the Secret's mount directly"
    );
    let secret = load("secret.yaml");
    let secret_volume = volumes
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("a secret volume");
    assert_eq!(
        str_at(secret_volume, "secret/secretName"),
        str_at(&secret, "metadata/name")
    );
    let (keys_mount, sub) = mount_of(agent, str_at(secret_volume, "name"));
    let key_name = config
        .identity
        .strip_prefix(keys_mount)
        .unwrap_or_else(|_| {
            panic!(
                "agent.yaml identity {} is not under the Secret's mount {keys_mount}",
                config.identity.display()
            )
        })
        .to_str()
        .unwrap();
    assert_eq!(
        sub, None,
        "a subPath mount would not follow a Secret update"
    );
    at(&secret, &format!("stringData/{key_name}"));
    if let Some(items) = at(secret_volume, "secret").get("items") {
        panic!("the whole Secret is mounted under its own key names, not {items:?}");
    }

    // Mode: owner (root) and group (fsGroup 65532, the agent's) read, nothing else. Kubernetes
    // reads YAML 1.1, where `0440` is octal (288); serde_yaml reads YAML 1.2, where it is not a
    // plain integer. Accept both spellings, as Kubernetes understands them.
    let mode = match at(secret_volume, "secret/defaultMode") {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) if s.starts_with('0') => i64::from_str_radix(s, 8).expect("octal mode"),
        other => panic!("defaultMode {other:?}"),
    };
    assert_eq!(mode, 0o440, "defaultMode: what fsGroup gives anyway");
    assert_eq!(
        int_at(at(pod_spec(&d), "securityContext"), "fsGroup"),
        UID,
        "the group the Secret's files get, so the agent can read them"
    );

    // Read-only but for the access state (the claim's volume), which the agent writes.
    let state = volumes
        .iter()
        .find(|v| v.get("persistentVolumeClaim").is_some())
        .map(|v| str_at(v, "name"));
    let read_only = seq(agent, "volumeMounts")
        .iter()
        .filter(|m| m.get("name").and_then(Value::as_str) != state)
        .all(|m| m.get("readOnly").and_then(Value::as_bool) == Some(true));
    assert!(
        read_only,
        "the agent's mounts are all read-only but the state's"
    );
}

#[test]
fn resources_are_set_and_the_memory_limit_covers_the_buffer_budget() {
    let d = load("deployment.yaml");
    let job = load("pause-job.yaml");
    for c in all_containers(&d).into_iter().chain(all_containers(&job)) {
        let name = str_at(c, "name");
        for kind in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                let set = c
                    .get("resources")
                    .and_then(|r| r.get(kind))
                    .and_then(|r| r.get(res))
                    .is_some();
                assert!(set, "{name}: resources.{kind}.{res} is not set");
            }
        }
    }
    let agent = agent_container(&d);
    let limit = quantity_bytes(str_at(agent, "resources/limits/memory"));
    let request = quantity_bytes(str_at(agent, "resources/requests/memory"));
    let config = agent_config(&d);
    // The most the agent can hold whatever the server sends (README "Threat model"), with a
    // fifth of the limit to spare: above it the pod could be OOM-killed by a hostile server.
    let bound = agent::tunnel::budget::memory_bound(&config.limits);
    assert!(
        bound <= limit / 5 * 4,
        "memory bound {bound} B (max_connections {}, total_buffer {} B) leaves under 20% of the {limit} B limit",
        config.limits.max_connections,
        config.limits.total_buffer
    );
    assert!(
        request >= 16 << 20 && request <= limit,
        "memory request {request} B"
    );
}

#[test]
fn images_are_pinned_and_kustomize_applies_everything_but_the_secret_and_the_job() {
    let d = load("deployment.yaml");
    let job = load("pause-job.yaml");
    for c in all_containers(&d).into_iter().chain(all_containers(&job)) {
        let image = str_at(c, "image");
        let last = image.rsplit('/').next().unwrap();
        let tag = last.split_once(':').map(|(_, t)| t);
        assert!(
            image.contains('@') || matches!(tag, Some(t) if t != "latest"),
            "{image}: pin a version (no tag means latest)"
        );
    }
    let k = load("kustomization.yaml");
    let resources: Vec<&str> = seq(&k, "resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in [
        "configmap.yaml",
        "pvc.yaml",
        "deployment.yaml",
        "networkpolicy.yaml",
    ] {
        assert!(resources.contains(&f), "kustomization.yaml lacks {f}");
        assert!(Path::new(DIR).join(f).exists());
    }
    assert!(
        !resources.contains(&"secret.yaml"),
        "`kubectl apply -k` would overwrite the real key with the placeholder"
    );
    assert!(
        !resources.contains(&"pause-job.yaml"),
        "`kubectl apply -k` would pause every forward"
    );
    assert!(Path::new(DIR).join("pause-job.yaml").exists());
    let agent_image = str_at(agent_container(&d), "image");
    for img in seq(&k, "images") {
        assert!(
            agent_image.starts_with(&format!("{}:", str_at(img, "name"))),
            "kustomization images[].name must match {agent_image}"
        );
        assert_ne!(str_at(img, "newTag"), "latest");
    }
}

/// The NetworkPolicy selects the agent's pods and admits only the admin port (agent.yaml's
/// `admin.listen`), from a selected source: nothing else of the cluster reaches the pod.
#[test]
fn the_network_policy_admits_only_the_admin_port_of_the_agent_pods() {
    let d = load("deployment.yaml");
    let policy = load("networkpolicy.yaml");
    assert_eq!(str_at(&policy, "kind"), "NetworkPolicy");
    assert_eq!(
        at(&policy, "spec/podSelector/matchLabels"),
        at(&d, "spec/template/metadata/labels"),
        "the policy must select the agent's pods"
    );
    let types: Vec<&str> = seq(&policy, "spec/policyTypes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types, ["Ingress"], "egress stays open: the agent dials out");
    let listen = agent_config(&d).admin_listen.expect("admin.listen");
    let rules = seq(&policy, "spec/ingress");
    assert!(!rules.is_empty());
    for rule in rules {
        let ports: Vec<i64> = seq(rule, "ports")
            .iter()
            .map(|p| int_at(p, "port"))
            .collect();
        assert_eq!(ports, [i64::from(listen.port())], "only the admin port");
        assert!(
            !seq(rule, "from").is_empty(),
            "an empty `from` admits every source"
        );
    }
}
