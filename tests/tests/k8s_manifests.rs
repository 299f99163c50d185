//! The Kubernetes manifests in `infra/k8s` (see its README.md): every
//! document deserializes into its k8s-openapi type with no field left over,
//! and the facts the fleet relies on hold: hosts get KVM, probes on the
//! operator port and the handsets' UDP port on their node; the gateways
//! are replicas sharing the fleet's keys from a Secret behind a UDP load
//! balancer that keeps the handset's address, and every pod reads one admin
//! token from a Secret; every `VPHONE_*` variable a pod sets is one
//! vphone-host reads, with a value it accepts; every Secret key a pod reads
//! is in the Secret template and every template key is read; selectors
//! select the pods they mean.
//!
//! k8s-openapi's `Deserialize` skips fields it does not know, so a
//! misspelled key (`replicass`, `containerPorts`) would pass here and surface
//! only when a cluster refuses it at deploy time (or drops it, without strict
//! validation). `serde_ignored` reports each such path, and any one fails the
//! test. The types are Kubernetes 1.33's (k8s-openapi's `v1_33`), the oldest
//! API the manifests support: a field added after 1.33 is reported the same
//! way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Namespace, PersistentVolumeClaim, PodSpec, PodTemplateSpec,
    Probe, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The manifests, beside the workspace's other deployment assets.
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/k8s");

/// The one file in `DIR` that is not Kubernetes objects.
const KUSTOMIZATION: &str = "kustomization.yaml";

/// The Secrets' template (placeholders): checked like every manifest, but
/// never applied by kustomization.yaml.
const SECRET_TEMPLATE: &str = "secret.yaml";

/// What every placeholder in the Secret template says.
const PLACEHOLDER: &str = "REPLACE-ME";

/// The namespace every namespaced object names.
const NAMESPACE: &str = "vphone";

/// Handsets' port: QUIC on UDP.
const HANDSET_PORT: i32 = 4433;

/// The operator port: gRPC API, `/metrics`, `/healthz`, `/readyz`.
const OPERATOR_PORT: i32 = 4434;

/// The KubeVirt device plugin's resource for `/dev/kvm`.
const KVM: &str = "devices.kubevirt.io/kvm";

/// Where a document is, for messages: file, index among the file's
/// documents (from 0, empty documents not counted), kind and name.
#[derive(Debug, Clone)]
struct Origin {
    file: String,
    index: usize,
    kind: String,
    name: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} document {} ({}/{})",
            self.file, self.index, self.kind, self.name
        )
    }
}

/// Every object of the manifests, by kind.
#[derive(Debug, Default)]
struct Manifests {
    namespaces: Vec<(Origin, Namespace)>,
    config_maps: Vec<(Origin, ConfigMap)>,
    secrets: Vec<(Origin, Secret)>,
    claims: Vec<(Origin, PersistentVolumeClaim)>,
    services: Vec<(Origin, Service)>,
    stateful_sets: Vec<(Origin, StatefulSet)>,
    deployments: Vec<(Origin, Deployment)>,
    network_policies: Vec<(Origin, NetworkPolicy)>,
    disruption_budgets: Vec<(Origin, PodDisruptionBudget)>,
}

/// A StatefulSet's or Deployment's pods, as its template describes them.
#[derive(Debug)]
struct Workload<'a> {
    origin: &'a Origin,
    selector: &'a LabelSelector,
    template: &'a PodTemplateSpec,
    /// A StatefulSet's volume claim templates: volumes its pods may mount.
    claims: Vec<&'a str>,
}

impl Manifests {
    /// Every document of every manifest in `DIR`, or every problem found in
    /// any of them.
    fn load() -> Result<Self> {
        let mut m = Self::default();
        let mut problems = Vec::new();
        for file in manifest_files()? {
            let text = std::fs::read_to_string(Path::new(DIR).join(&file))
                .with_context(|| format!("reading {file}"))?;
            if let Err(e) = m.add_file(&file, &text) {
                problems.push(format!("{e:#}"));
            }
        }
        ensure!(
            problems.is_empty(),
            "{} file(s) in {DIR} with problems:\n{}",
            problems.len(),
            problems.join("\n")
        );
        ensure!(
            !m.stateful_sets.is_empty() && !m.services.is_empty(),
            "no workload or Service found in {DIR}"
        );
        Ok(m)
    }

    /// Adds the documents of one file, reporting every document's problems
    /// together.
    fn add_file(&mut self, file: &str, text: &str) -> Result<()> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| anyhow!("{file}: not YAML: {e}"))?;
        let mut problems = Vec::new();
        for (index, doc) in docs.into_iter().enumerate() {
            if let Err(e) = self.add(file, index, doc) {
                problems.push(format!("{e:#}"));
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }

    /// One document, into the type its `apiVersion` and `kind` name.
    fn add(&mut self, file: &str, index: usize, doc: Value) -> Result<()> {
        let text = |pointer: &str| {
            doc.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let api_version = text("/apiVersion");
        let kind = text("/kind");
        let namespace = text("/metadata/namespace");
        let origin = Origin {
            file: file.to_owned(),
            index,
            kind: kind.clone(),
            name: text("/metadata/name"),
        };
        ensure!(!origin.name.is_empty(), "{origin}: no metadata.name");
        if kind != Namespace::KIND {
            ensure!(
                namespace == NAMESPACE,
                "{origin}: metadata.namespace is {namespace:?}, not {NAMESPACE:?} \
                 (kubectl apply would put it in the current namespace)"
            );
        }
        let (a, k) = (api_version.as_str(), kind.as_str());
        if is::<Namespace>(a, k) {
            push(&mut self.namespaces, doc, origin)
        } else if is::<ConfigMap>(a, k) {
            push(&mut self.config_maps, doc, origin)
        } else if is::<Secret>(a, k) {
            push(&mut self.secrets, doc, origin)
        } else if is::<PersistentVolumeClaim>(a, k) {
            push(&mut self.claims, doc, origin)
        } else if is::<Service>(a, k) {
            push(&mut self.services, doc, origin)
        } else if is::<StatefulSet>(a, k) {
            push(&mut self.stateful_sets, doc, origin)
        } else if is::<Deployment>(a, k) {
            push(&mut self.deployments, doc, origin)
        } else if is::<NetworkPolicy>(a, k) {
            push(&mut self.network_policies, doc, origin)
        } else if is::<PodDisruptionBudget>(a, k) {
            push(&mut self.disruption_budgets, doc, origin)
        } else {
            bail!(
                "{origin}: apiVersion {a:?} kind {k:?} is not a kind this test knows; \
                 add it to Manifests::add if it belongs in {DIR}"
            )
        }
    }

    /// Every Secret's keys (`data` and `stringData`), by name.
    fn secret_keys(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        self.secrets
            .iter()
            .map(|(o, s)| {
                let data = s.data.iter().flat_map(|d| d.keys());
                let text = s.string_data.iter().flat_map(|d| d.keys());
                let keys = data.chain(text).map(String::as_str);
                (o.name.as_str(), keys.collect::<BTreeSet<_>>())
            })
            .collect()
    }

    /// Every StatefulSet's and Deployment's pods.
    fn workloads(&self) -> Result<Vec<Workload<'_>>> {
        let mut all = Vec::new();
        for (origin, set) in &self.stateful_sets {
            let spec = set
                .spec
                .as_ref()
                .with_context(|| format!("{origin}: no spec"))?;
            all.push(Workload {
                origin,
                selector: &spec.selector,
                template: &spec.template,
                claims: spec
                    .volume_claim_templates
                    .iter()
                    .flatten()
                    .filter_map(|c| c.metadata.name.as_deref())
                    .collect(),
            });
        }
        for (origin, deployment) in &self.deployments {
            let spec = deployment
                .spec
                .as_ref()
                .with_context(|| format!("{origin}: no spec"))?;
            all.push(Workload {
                origin,
                selector: &spec.selector,
                template: &spec.template,
                claims: Vec::new(),
            });
        }
        Ok(all)
    }
}

/// Whether `apiVersion` and `kind` name `T`.
fn is<T: Resource>(api_version: &str, kind: &str) -> bool {
    api_version == T::API_VERSION && kind == T::KIND
}

/// [`typed`], onto `list`.
fn push<T: Resource + DeserializeOwned>(
    list: &mut Vec<(Origin, T)>,
    doc: Value,
    origin: Origin,
) -> Result<()> {
    list.push(typed(doc, origin)?);
    Ok(())
}

/// `doc` as a `T`, failing with every field `T` does not have, which
/// k8s-openapi alone would skip silently.
fn typed<T: Resource + DeserializeOwned>(doc: Value, origin: Origin) -> Result<(Origin, T)> {
    let mut ignored = Vec::new();
    let object: T = serde_ignored::deserialize(doc, |path| ignored.push(readable(&path)))
        .with_context(|| format!("{origin}: not a valid {}", T::KIND))?;
    ensure!(
        ignored.is_empty(),
        "{origin}: {} field(s) a {} does not have (misspelled or misplaced?): {}",
        ignored.len(),
        T::KIND,
        ignored.join(", ")
    );
    Ok((origin, object))
}

/// `serde_ignored`'s path without its `?` steps (one per `Option`), as a
/// manifest spells it: `spec.template.spec.containers.0.containerPorts`.
fn readable(path: &serde_ignored::Path<'_>) -> String {
    let path = path.to_string();
    let steps: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
    steps.join(".")
}

/// The manifests: every `*.yaml` in `DIR` but kustomization.yaml, sorted.
fn manifest_files() -> Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(DIR).with_context(|| format!("reading {DIR}"))? {
        let name = entry?
            .file_name()
            .into_string()
            .map_err(|n| anyhow!("a file name that is not UTF-8 in {DIR}: {n:?}"))?;
        ensure!(
            !name.ends_with(".yml"),
            "{name}: name it .yaml, as this test and kustomization.yaml expect"
        );
        if name.ends_with(".yaml") && name != KUSTOMIZATION {
            files.push(name);
        }
    }
    files.sort();
    Ok(files)
}

fn pod_spec<'a>(origin: &Origin, template: &'a PodTemplateSpec) -> Result<&'a PodSpec> {
    template
        .spec
        .as_ref()
        .with_context(|| format!("{origin}: its pod template has no spec"))
}

/// A pod's containers and init containers.
fn containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
}

fn labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Whether `selector` selects pods labelled `labels` (an empty selector
/// selects every pod, as in Kubernetes).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && selector.match_expressions.iter().flatten().all(|r| {
            let have = labels.get(&r.key);
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// Whether `selector` is empty, which selects every pod.
fn matches_everything(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

/// The literal value of variable `name`.
fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    env(c, name)?.value.as_deref()
}

/// The downward API field variable `name` comes from.
fn env_field<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    let field = env(c, name)?.value_from.as_ref()?.field_ref.as_ref()?;
    Some(field.field_path.as_str())
}

/// The Secret and key variable `name` comes from.
fn env_secret<'a>(c: &'a Container, name: &str) -> Option<(&'a str, &'a str)> {
    let r = env(c, name)?.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((r.name.as_str(), r.key.as_str()))
}

/// The port and path a probe's `httpGet` asks for, a named port resolved
/// through the container's ports.
fn http_probe(c: &Container, probe: Option<&Probe>) -> Option<(i32, String)> {
    let get = probe?.http_get.as_ref()?;
    let port = match &get.port {
        IntOrString::Int(port) => *port,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    Some((port, get.path.clone().unwrap_or_default()))
}

/// The `$(NAME)` references in an env value (`$$(` is an escaped `$(`).
fn references(value: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("$(") {
        let escaped = rest[..at].ends_with('$');
        let after = &rest[at + 2..];
        if escaped {
            rest = after;
            continue;
        }
        let Some(end) = after.find(')') else { break };
        found.push(&after[..end]);
        rest = &after[end + 1..];
    }
    found
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether `all` (objects' names to their keys) has an object `name`, with
/// `key` if one is given.
fn defined(all: &BTreeMap<&str, BTreeSet<&str>>, name: &str, key: Option<&str>) -> bool {
    all.get(name)
        .is_some_and(|keys| key.is_none_or(|k| keys.contains(k)))
}

/// `named(list, kind, name)`: the object called `name`.
fn named<'a, T>(list: &'a [(Origin, T)], kind: &str, name: &str) -> Result<&'a T> {
    list.iter()
        .find(|(o, _)| o.name == name)
        .map(|(_, t)| t)
        .with_context(|| format!("no {kind} {name} in {DIR}"))
}

/// Every document of every manifest is a Kubernetes object of a kind this
/// test knows, in the fleet's namespace, with no field its type lacks.
#[test]
fn every_manifest_parses_into_its_kubernetes_type_with_no_field_ignored() -> Result<()> {
    let m = Manifests::load()?;
    assert_eq!(m.namespaces.len(), 1, "one Namespace, vphone");
    Ok(())
}

/// A host needs KVM (the emulator's phones), its probes on the operator
/// port, the handsets' UDP port on its node's address (where redirects
/// send them, as registered in VPHONE_PUBLIC_ADDR), the registry URL from
/// the Secret, one node to itself, and a data dir it owns.
#[test]
fn hosts_get_kvm_probes_on_the_operator_port_and_udp_4433_on_their_node() -> Result<()> {
    let m = Manifests::load()?;
    let set = named(&m.stateful_sets, "StatefulSet", "vphone-host")?;
    let spec = set.spec.as_ref().context("vphone-host: no spec")?;
    assert_eq!(spec.service_name.as_deref(), Some("vphone-host"));
    let headless = named(&m.services, "Service", "vphone-host")?;
    assert_eq!(
        headless.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None"),
        "the hosts' governing Service is headless"
    );
    let pod = spec
        .template
        .spec
        .as_ref()
        .context("vphone-host: no pod spec")?;
    let c = pod
        .containers
        .iter()
        .find(|c| c.name == "vphone-host")
        .context("vphone-host: no container vphone-host")?;
    assert_eq!(c.command, Some(strings(&["vphone-host", "serve"])));

    let resources = c.resources.as_ref().context("vphone-host: no resources")?;
    for (what, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let kvm = list.as_ref().and_then(|l| l.get(KVM)).map(|q| q.0.as_str());
        assert_eq!(kvm, Some("1"), "vphone-host's {what} of {KVM}");
    }

    let health = Some((OPERATOR_PORT, "/healthz".to_owned()));
    let ready = Some((OPERATOR_PORT, "/readyz".to_owned()));
    assert_eq!(http_probe(c, c.liveness_probe.as_ref()), health, "liveness");
    assert_eq!(
        http_probe(c, c.readiness_probe.as_ref()),
        ready,
        "readiness"
    );

    let on_node = |protocol: &str| {
        c.ports.iter().flatten().any(|p| {
            p.container_port == HANDSET_PORT
                && p.host_port == Some(HANDSET_PORT)
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
    };
    assert!(
        on_node("UDP"),
        "no hostPort {HANDSET_PORT}/UDP: handsets sent to this host could not reach it"
    );
    // Browser handsets do not follow redirects (README.md, "Limits"): the
    // page and its TCP port stay off.
    assert_eq!(env_value(c, "VPHONE_WEB"), Some("0"));
    assert!(
        !on_node("TCP"),
        "hostPort {HANDSET_PORT}/TCP with the page off"
    );
    assert!(
        !c.ports
            .iter()
            .flatten()
            .any(|p| p.container_port == OPERATOR_PORT && p.host_port.is_some()),
        "the operator port (no TLS) must not be on the node's address"
    );
    assert_ne!(pod.host_network, Some(true), "hostPort, not hostNetwork");
    assert_eq!(env_field(c, "NODE_IP"), Some("status.hostIP"));
    assert_eq!(env_value(c, "VPHONE_PUBLIC_ADDR"), Some("$(NODE_IP):4433"));
    assert_eq!(env_field(c, "VPHONE_HOST_NAME"), Some("metadata.name"));
    assert_eq!(
        env_secret(c, "VPHONE_REGISTRY"),
        Some(("vphone-fleet", "registry-url"))
    );

    let one_per_node = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|terms| {
            terms.iter().any(|t| {
                t.topology_key == "kubernetes.io/hostname"
                    && t.label_selector
                        .as_ref()
                        .is_some_and(|s| selects(s, &labels(&spec.template)))
            })
        });
    assert!(one_per_node, "no required anti-affinity: one host per node");
    assert_eq!(pod.termination_grace_period_seconds, Some(30));

    let sc = c
        .security_context
        .as_ref()
        .context("vphone-host: no securityContext")?;
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc
        .capabilities
        .as_ref()
        .context("vphone-host: no capabilities")?;
    assert_eq!(caps.drop, Some(strings(&["ALL"])));
    assert_eq!(caps.add, Some(strings(&["SYS_NICE"])), "real-time priority");
    let psc = pod
        .security_context
        .as_ref()
        .context("vphone-host: no pod securityContext")?;
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.is_some_and(|uid| uid > 0), "a fixed uid");

    // The host creates its data dir 0700 and checks that it owns it; a
    // volume's root belongs to root.
    let data_dir = env_value(c, "VPHONE_DATA_DIR").context("vphone-host: no VPHONE_DATA_DIR")?;
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| v.name == "data")
        .context("vphone-host: the data volume is not mounted")?;
    assert!(
        data_dir.starts_with(&format!("{}/", mount.mount_path)),
        "VPHONE_DATA_DIR {data_dir} is not below the volume's root {}",
        mount.mount_path
    );

    let budget = named(&m.disruption_budgets, "PodDisruptionBudget", "vphone-host")?;
    let budget = budget
        .spec
        .as_ref()
        .context("vphone-host's budget: no spec")?;
    assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
    assert!(
        budget
            .selector
            .as_ref()
            .is_some_and(|s| selects(s, &labels(&spec.template))),
        "the hosts' budget does not cover the hosts"
    );
    Ok(())
}

/// The Secret volume of `pod` that `c` mounts at a directory holding
/// `path` (a file or the mount's directory itself): the Secret's name and
/// the volume's default file mode; `None` when `path` is on no Secret.
fn secret_under<'a>(
    pod: &'a PodSpec,
    c: &'a Container,
    path: &str,
) -> Option<(&'a str, Option<i32>, bool)> {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path == m.mount_path || path.starts_with(&format!("{}/", m.mount_path)))?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    let secret = volume.secret.as_ref()?;
    Some((
        secret.secret_name.as_deref()?,
        secret.default_mode,
        mount.read_only == Some(true),
    ))
}

/// The front doors: `vphone-host gateway` as a Deployment of at least two
/// replicas (a rollout adds one before it removes one; a budget lets one go
/// at a time), each a host of its own in the registry (the pod's name),
/// presenting the fleet's identity and minting with the fleet's token key
/// from the Secret `vphone-fleet-keys` (the files `vphone-host fleet-keys`
/// writes, as host-core names them), behind a LoadBalancer for UDP 4433
/// that keeps the handset's source address. Every host and gateway reads
/// one admin token from the Secret `vphone-admin`, read-only, no file
/// readable by others.
#[test]
fn the_gateways_share_the_fleet_keys_from_a_secret_behind_a_udp_load_balancer() -> Result<()> {
    let m = Manifests::load()?;
    let service = named(&m.services, "Service", "vphone-gateway")?;
    let svc = service
        .spec
        .as_ref()
        .context("Service vphone-gateway: no spec")?;
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        svc.external_traffic_policy.as_deref(),
        Some("Local"),
        "the gateway must see the handset's address, not a node's"
    );
    assert!(
        svc.ports
            .iter()
            .flatten()
            .any(|p| p.port == HANDSET_PORT && p.protocol.as_deref() == Some("UDP")),
        "the gateway Service has no {HANDSET_PORT}/UDP"
    );

    let gateway = named(&m.deployments, "Deployment", "vphone-gateway")?;
    let spec = gateway.spec.as_ref().context("vphone-gateway: no spec")?;
    let replicas = spec.replicas.unwrap_or(1);
    assert!(
        replicas >= 2,
        "{replicas} gateway replica(s): one node's loss takes the front door"
    );
    let strategy = spec
        .strategy
        .as_ref()
        .context("vphone-gateway: no strategy")?;
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::Int(0)),
        "a rollout must not take a front door away before its replacement is up"
    );
    let pod = spec
        .template
        .spec
        .as_ref()
        .context("vphone-gateway: no pod spec")?;
    let c = pod
        .containers
        .first()
        .context("vphone-gateway: no container")?;
    assert_eq!(c.command, Some(strings(&["vphone-host", "gateway"])));
    let health = Some((OPERATOR_PORT, "/healthz".to_owned()));
    let ready = Some((OPERATOR_PORT, "/readyz".to_owned()));
    assert_eq!(http_probe(c, c.liveness_probe.as_ref()), health, "liveness");
    assert_eq!(
        http_probe(c, c.readiness_probe.as_ref()),
        ready,
        "readiness"
    );
    // It refuses to start without the registry.
    assert_eq!(
        env_secret(c, "VPHONE_REGISTRY"),
        Some(("vphone-fleet", "registry-url"))
    );
    // Each replica its own name: two under one name would mark each
    // other stopped.
    assert_eq!(env_field(c, "VPHONE_HOST_NAME"), Some("metadata.name"));
    assert!(
        env_value(c, "VPHONE_PUBLIC_ADDR").is_some_and(|a| a.ends_with(":4433")),
        "the gateway's VPHONE_PUBLIC_ADDR (its DNS name, as enrollment strings name it) is not set"
    );
    assert_eq!(env_value(c, "VPHONE_WEB"), Some("0"), "browser page off");

    // The fleet's keys: a Secret with the files host-core loads.
    let keys_dir =
        env_value(c, "VPHONE_FLEET_KEYS").context("vphone-gateway: no VPHONE_FLEET_KEYS")?;
    let (keys_secret, mode, read_only) = secret_under(pod, c, keys_dir)
        .with_context(|| format!("vphone-gateway: {keys_dir} is not a Secret's mount"))?;
    assert_eq!(keys_secret, "vphone-fleet-keys");
    assert!(read_only, "the fleet keys are mounted writable");
    assert!(
        private_to_group(mode) && pod_group(pod).is_some(),
        "the fleet keys' files must be readable by the pod's group (fsGroup) and nobody else \
         (defaultMode {mode:?}, fsGroup {:?})",
        pod_group(pod)
    );
    let secrets = m.secret_keys();
    let template_keys = secrets
        .get(keys_secret)
        .with_context(|| format!("no Secret {keys_secret} in {SECRET_TEMPLATE}"))?;
    let loaded: BTreeSet<&str> = host_core::enroll::FLEET_KEY_FILES
        .iter()
        .copied()
        .filter(|f| *f != host_core::enroll::ADMIN_TOKEN_FILE)
        .collect();
    assert_eq!(
        template_keys, &loaded,
        "the Secret's keys are the files the gateway loads"
    );

    // One admin token for every host and gateway, from vphone-admin.
    let mut checked = 0;
    for w in m.workloads()? {
        let pod = pod_spec(w.origin, w.template)?;
        for c in containers(pod) {
            if c.command
                .as_ref()
                .and_then(|cmd| cmd.first())
                .map(String::as_str)
                != Some("vphone-host")
            {
                continue;
            }
            let file = env_value(c, "VPHONE_ADMIN_TOKEN_FILE")
                .with_context(|| format!("{}: no VPHONE_ADMIN_TOKEN_FILE", w.origin))?;
            assert!(
                file.ends_with(&format!("/{}", host_core::enroll::ADMIN_TOKEN_FILE)),
                "{}: {file}",
                w.origin
            );
            let (secret, mode, read_only) = secret_under(pod, c, file)
                .with_context(|| format!("{}: {file} is not on a Secret", w.origin))?;
            assert_eq!(secret, "vphone-admin", "{}", w.origin);
            assert!(
                read_only && private_to_group(mode) && pod_group(pod).is_some(),
                "{}: the admin token must be read-only, readable by the pod's group \
                 (fsGroup) and nobody else",
                w.origin
            );
            checked += 1;
            assert!(
                defined(&secrets, secret, Some(host_core::enroll::ADMIN_TOKEN_FILE)),
                "Secret {secret} has no key {}",
                host_core::enroll::ADMIN_TOKEN_FILE
            );
        }
    }

    assert_eq!(checked, 2, "the hosts' and the gateways' containers");

    // Rollouts: a new replica is available only once the load balancer
    // had time to take it in; a stopping one says "leaving" on /readyz and
    // keeps serving until its endpoint is dropped (readiness fails twice),
    // within its grace period.
    assert!(
        spec.min_ready_seconds.unwrap_or(0) >= 10,
        "minReadySeconds {:?}",
        spec.min_ready_seconds
    );
    let delay: i64 = env_value(c, "VPHONE_SHUTDOWN_DELAY_SECS")
        .context("vphone-gateway: no VPHONE_SHUTDOWN_DELAY_SECS")?
        .parse()?;
    let readiness = c.readiness_probe.as_ref().context("no readiness probe")?;
    let unready_after = i64::from(readiness.period_seconds.unwrap_or(10))
        * i64::from(readiness.failure_threshold.unwrap_or(3));
    assert!(
        delay > unready_after,
        "the shutdown delay {delay} s ends before the endpoint is dropped ({unready_after} s)"
    );
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    assert!(
        grace >= delay + 10,
        "terminationGracePeriodSeconds {grace} leaves no time to stop after the {delay} s delay"
    );

    // Each of the Service's ports reaches a port of the gateway's container
    // with the same protocol.
    for p in svc.ports.iter().flatten() {
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        let reached = c.ports.iter().flatten().any(|cp| {
            cp.protocol.as_deref().unwrap_or("TCP") == protocol
                && match &p.target_port {
                    None => cp.container_port == p.port,
                    Some(IntOrString::Int(n)) => cp.container_port == *n,
                    Some(IntOrString::String(name)) => cp.name.as_deref() == Some(name.as_str()),
                }
        });
        assert!(
            reached,
            "Service port {}/{protocol} reaches no port of vphone-gateway",
            p.port
        );
    }

    // A budget lets voluntary disruptions take one replica at a time, and
    // never blocks a drain.
    let pods = labels(&spec.template);
    let budgets: Vec<_> = m
        .disruption_budgets
        .iter()
        .filter_map(|(_, b)| b.spec.as_ref())
        .filter(|b| b.selector.as_ref().is_some_and(|s| selects(s, &pods)))
        .collect();
    assert_eq!(budgets.len(), 1, "one budget for the gateways");
    assert_eq!(budgets[0].max_unavailable, Some(IntOrString::Int(1)));
    assert!(budgets[0].min_available.is_none());
    Ok(())
}

/// A Secret volume's file mode: readable by its group (the pod's fsGroup),
/// nothing for others.
fn private_to_group(mode: Option<i32>) -> bool {
    mode.is_some_and(|m| m & 0o040 != 0 && m & 0o007 == 0)
}

/// The pod's fsGroup: the group a Secret volume's files belong to.
fn pod_group(pod: &PodSpec) -> Option<i64> {
    pod.security_context.as_ref()?.fs_group
}

/// Every `VPHONE_*` variable a vphone-host container sets is a setting
/// vphone-host reads (asked of `ConfigLayer::from_env` itself, plus
/// `VPHONE_CONFIG`, read by its command line), and the literal values
/// parse as it parses them: a removed or misspelled setting would be
/// ignored silently, a bad value would stop the host at start.
#[test]
fn every_vphone_variable_a_pod_sets_is_one_vphone_host_reads_with_a_valid_value() -> Result<()> {
    use std::cell::RefCell;

    let asked = RefCell::new(BTreeSet::new());
    host_core::config::ConfigLayer::from_env(&|k: &str| -> Option<String> {
        asked.borrow_mut().insert(k.to_owned());
        None
    })
    .map_err(|e| anyhow!("from_env with nothing set: {e}"))?;
    let mut known = asked.into_inner();
    known.insert("VPHONE_CONFIG".to_owned());

    let m = Manifests::load()?;
    let mut problems = Vec::new();
    let mut seen = 0;
    for w in m.workloads()? {
        let pod = pod_spec(w.origin, w.template)?;
        for c in containers(pod) {
            let runs_host = c
                .command
                .as_ref()
                .and_then(|cmd| cmd.first())
                .is_some_and(|p| p == "vphone-host");
            if !runs_host {
                continue;
            }
            seen += 1;
            let mut literal = BTreeMap::new();
            for e in c.env.iter().flatten() {
                if e.name.starts_with("VPHONE_") && !known.contains(&e.name) {
                    problems.push(format!(
                        "{}: container {} sets {}, which vphone-host does not read",
                        w.origin, c.name, e.name
                    ));
                }
                if let Some(v) = &e.value {
                    literal.insert(e.name.clone(), v.clone());
                }
            }
            let env = |k: &str| literal.get(k).cloned();
            if let Err(e) = host_core::config::ConfigLayer::from_env(&env) {
                problems.push(format!("{}: container {}: {e}", w.origin, c.name));
            }
        }
    }
    assert_eq!(seen, 2, "the hosts' and the gateway's containers");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Every Secret key a pod reads (env `valueFrom`, `envFrom`, volume
/// `items`) is in the Secret template, which README.md's `kubectl create
/// secret` commands follow, and every key of the template is read by some
/// pod (no leftover of a setting the hosts no longer have); every ConfigMap
/// key and volume claim a pod uses is defined here. A missing key leaves a
/// pod waiting in CreateContainerConfigError, a missing claim in Pending.
#[test]
fn every_secret_key_a_pod_reads_is_in_the_template_and_every_template_key_is_read() -> Result<()> {
    let m = Manifests::load()?;
    let stray: Vec<String> = m
        .secrets
        .iter()
        .filter(|(o, _)| o.file != SECRET_TEMPLATE)
        .map(|(o, _)| o.to_string())
        .collect();
    assert!(
        stray.is_empty(),
        "Secrets outside {SECRET_TEMPLATE} (kubectl apply -k would write them): {stray:?}"
    );
    let secrets = m.secret_keys();
    let config_maps: BTreeMap<&str, BTreeSet<&str>> = m
        .config_maps
        .iter()
        .map(|(o, c)| {
            let data = c.data.iter().flat_map(|d| d.keys());
            let binary = c.binary_data.iter().flat_map(|d| d.keys());
            let keys = data.chain(binary).map(String::as_str);
            (o.name.as_str(), keys.collect::<BTreeSet<_>>())
        })
        .collect();

    let claims: BTreeSet<&str> = m.claims.iter().map(|(o, _)| o.name.as_str()).collect();

    let mut missing = Vec::new();
    // (Secret, key) pairs some pod reads; (Secret, None): all its keys.
    let mut read: BTreeSet<(&str, Option<&str>)> = BTreeSet::new();
    let workloads = m.workloads()?;
    for w in &workloads {
        let pod = pod_spec(w.origin, w.template)?;
        for c in containers(pod) {
            let at = |what: &str| format!("{}: container {} {what}", w.origin, c.name);
            for e in c.env.iter().flatten() {
                let Some(from) = &e.value_from else { continue };
                if let Some(r) = &from.secret_key_ref {
                    read.insert((r.name.as_str(), Some(r.key.as_str())));
                }
                if let Some(r) = &from.secret_key_ref
                    && r.optional != Some(true)
                    && !defined(&secrets, &r.name, Some(r.key.as_str()))
                {
                    missing.push(at(&format!(
                        "env {}: Secret {} key {}",
                        e.name, r.name, r.key
                    )));
                }
                if let Some(r) = &from.config_map_key_ref
                    && r.optional != Some(true)
                    && !defined(&config_maps, &r.name, Some(r.key.as_str()))
                {
                    missing.push(at(&format!(
                        "env {}: ConfigMap {} key {}",
                        e.name, r.name, r.key
                    )));
                }
            }
            for f in c.env_from.iter().flatten() {
                if let Some(r) = &f.secret_ref {
                    read.insert((r.name.as_str(), None));
                }
                if let Some(r) = &f.secret_ref
                    && r.optional != Some(true)
                    && !defined(&secrets, &r.name, None)
                {
                    missing.push(at(&format!("envFrom: Secret {}", r.name)));
                }
                if let Some(r) = &f.config_map_ref
                    && r.optional != Some(true)
                    && !defined(&config_maps, &r.name, None)
                {
                    missing.push(at(&format!("envFrom: ConfigMap {}", r.name)));
                }
            }
        }
        for v in pod.volumes.iter().flatten() {
            let at = |what: String| format!("{}: volume {}: {what}", w.origin, v.name);
            if let Some(s) = &v.secret
                && s.optional != Some(true)
            {
                let name = s.secret_name.as_deref().unwrap_or_default();
                if !defined(&secrets, name, None) {
                    missing.push(at(format!("Secret {name}")));
                }
                match &s.items {
                    None => {
                        read.insert((name, None));
                    }
                    Some(items) => {
                        for item in items {
                            read.insert((name, Some(item.key.as_str())));
                            if !defined(&secrets, name, Some(item.key.as_str())) {
                                missing.push(at(format!("Secret {name} key {}", item.key)));
                            }
                        }
                    }
                }
            }
            if let Some(pvc) = &v.persistent_volume_claim
                && !claims.contains(pvc.claim_name.as_str())
            {
                missing.push(at(format!("PersistentVolumeClaim {}", pvc.claim_name)));
            }
            if let Some(cm) = &v.config_map
                && cm.optional != Some(true)
            {
                if !defined(&config_maps, &cm.name, None) {
                    missing.push(at(format!("ConfigMap {}", cm.name)));
                }
                for item in cm.items.iter().flatten() {
                    if !defined(&config_maps, &cm.name, Some(item.key.as_str())) {
                        missing.push(at(format!("ConfigMap {} key {}", cm.name, item.key)));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys pods read that no manifest defines:\n{}",
        missing.join("\n")
    );

    let mut unread = Vec::new();
    for (name, keys) in &secrets {
        for key in keys {
            if !read.contains(&(*name, Some(*key))) && !read.contains(&(*name, None)) {
                unread.push(format!("Secret {name} key {key}"));
            }
        }
    }
    assert!(
        unread.is_empty(),
        "{SECRET_TEMPLATE} keys no pod reads (remove them, and from README.md): {unread:?}"
    );
    Ok(())
}

/// The Secret template holds placeholders only: a real token, password or
/// key committed here would be public.
#[test]
fn the_secret_template_holds_placeholders_only() -> Result<()> {
    let m = Manifests::load()?;
    let templates: Vec<_> = m
        .secrets
        .iter()
        .filter(|(o, _)| o.file == SECRET_TEMPLATE)
        .collect();
    assert!(!templates.is_empty(), "{SECRET_TEMPLATE} defines no Secret");
    for (origin, secret) in templates {
        assert!(
            secret.data.is_none(),
            "{origin}: use stringData with {PLACEHOLDER} values, not data"
        );
        for (key, value) in secret.string_data.iter().flatten() {
            assert!(
                value.contains(PLACEHOLDER),
                "{origin}: {key} is not a {PLACEHOLDER} placeholder"
            );
        }
    }
    Ok(())
}

/// Every container names an image; every `$(NAME)` in an env value names a
/// variable listed before it (Kubernetes leaves any other as literal text);
/// every volume mount names a volume of its pod; and every pod turns off
/// Service links (the Services vphone-registry, vphone-host and
/// vphone-gateway would add VPHONE_REGISTRY_PORT, VPHONE_HOST_SERVICE_HOST...
/// beside the host's own VPHONE_* settings) and the service account token
/// (no pod calls the API server).
#[test]
fn every_pod_names_its_images_variables_and_volumes_and_gets_no_service_links() -> Result<()> {
    let m = Manifests::load()?;
    let mut problems = Vec::new();
    for w in m.workloads()? {
        let pod = pod_spec(w.origin, w.template)?;
        if pod.enable_service_links != Some(false) {
            problems.push(format!("{}: enableServiceLinks is not false", w.origin));
        }
        if pod.automount_service_account_token != Some(false) {
            problems.push(format!(
                "{}: automountServiceAccountToken is not false",
                w.origin
            ));
        }
        let volumes: BTreeSet<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .chain(w.claims.iter().copied())
            .collect();
        for c in containers(pod) {
            if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                problems.push(format!("{}: container {} has no image", w.origin, c.name));
            }
            let mut earlier: BTreeSet<&str> = BTreeSet::new();
            for e in c.env.iter().flatten() {
                for name in references(e.value.as_deref().unwrap_or_default()) {
                    if !earlier.contains(name) {
                        problems.push(format!(
                            "{}: container {} env {} uses $({name}), not defined before it",
                            w.origin, c.name, e.name
                        ));
                    }
                }
                earlier.insert(e.name.as_str());
            }
            for mount in c.volume_mounts.iter().flatten() {
                if !volumes.contains(mount.name.as_str()) {
                    problems.push(format!(
                        "{}: container {} mounts {}, which is no volume of its pod",
                        w.origin, c.name, mount.name
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Selectors select what they mean: each workload's selector is not empty
/// and matches its own pods; every Service, PodDisruptionBudget and
/// non-empty NetworkPolicy pod selector matches the pods of some workload.
/// The API server accepts a selector that matches nothing, which then
/// silently does nothing.
#[test]
fn every_selector_selects_pods_of_these_manifests() -> Result<()> {
    let m = Manifests::load()?;
    let workloads = m.workloads()?;
    let pods: Vec<BTreeMap<String, String>> =
        workloads.iter().map(|w| labels(w.template)).collect();
    let mut problems = Vec::new();
    for w in &workloads {
        if matches_everything(w.selector) || !selects(w.selector, &labels(w.template)) {
            problems.push(format!(
                "{}: its selector does not select its own pods",
                w.origin
            ));
        }
    }
    for (origin, service) in &m.services {
        let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
        let Some(selector) = selector.filter(|s| !s.is_empty()) else {
            problems.push(format!("{origin}: no selector"));
            continue;
        };
        if !pods
            .iter()
            .any(|p| selector.iter().all(|(k, v)| p.get(k) == Some(v)))
        {
            problems.push(format!("{origin}: selects no pods"));
        }
    }
    for (origin, budget) in &m.disruption_budgets {
        let selector = budget.spec.as_ref().and_then(|s| s.selector.as_ref());
        let covers =
            selector.is_some_and(|s| !matches_everything(s) && pods.iter().any(|p| selects(s, p)));
        if !covers {
            problems.push(format!("{origin}: selects no pods"));
        }
    }
    for (origin, policy) in &m.network_policies {
        let selector = policy.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
        if let Some(s) = selector
            && !matches_everything(s)
            && !pods.iter().any(|p| selects(s, p))
        {
            problems.push(format!("{origin}: its podSelector selects no pods"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// `kubectl apply -k` applies every manifest but the Secret template, so it
/// never writes placeholders over the real Secrets.
#[test]
fn the_kustomization_lists_every_manifest_but_the_secret_template() -> Result<()> {
    let text = std::fs::read_to_string(Path::new(DIR).join(KUSTOMIZATION))?;
    let kustomization: Value =
        serde_saphyr::from_str(&text).map_err(|e| anyhow!("{KUSTOMIZATION}: {e}"))?;
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .context("kustomization.yaml has no resources list")?
        .iter()
        .map(|r| r.as_str().context("a resource that is not a file name"))
        .collect::<Result<_>>()?;
    let files = manifest_files()?;
    let expected: BTreeSet<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|f| *f != SECRET_TEMPLATE)
        .collect();
    assert_eq!(listed, expected);
    Ok(())
}

/// The check itself: the host StatefulSet with two misspelled fields, one
/// at the top of its spec and one in its container, fails, naming both.
#[test]
fn a_misspelled_field_in_the_host_stateful_set_is_reported_with_its_path() -> Result<()> {
    let text = std::fs::read_to_string(Path::new(DIR).join("host.yaml"))?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| anyhow!("host.yaml: {e}"))?;
    let (index, mut set) = docs
        .into_iter()
        .enumerate()
        .find(|(_, d)| d["kind"] == "StatefulSet")
        .context("host.yaml has no StatefulSet")?;
    let origin = Origin {
        file: "host.yaml".to_owned(),
        index,
        kind: "StatefulSet".to_owned(),
        name: "vphone-host".to_owned(),
    };
    typed::<StatefulSet>(set.clone(), origin.clone()).context("as it is")?;

    set["spec"]["replicass"] = json!(2);
    set.pointer_mut("/spec/template/spec/containers/0")
        .and_then(Value::as_object_mut)
        .context("host.yaml's StatefulSet has no container")?
        .insert(
            "containerPorts".to_owned(),
            json!([{ "containerPort": 4433, "protocol": "UDP" }]),
        );
    let Err(e) = typed::<StatefulSet>(set, origin) else {
        bail!("two misspelled fields passed unnoticed");
    };
    let report = format!("{e:#}");
    for part in [
        "host.yaml document",
        "(StatefulSet/vphone-host)",
        "spec.replicass",
        "spec.template.spec.containers.0.containerPorts",
    ] {
        assert!(
            report.contains(part),
            "the report does not say {part:?}: {report}"
        );
    }
    Ok(())
}

/// The same through the YAML reader, for a whole file: the report names
/// the file, the document's index, its kind and name and each path; a kind
/// this test does not know is refused, not skipped.
#[test]
fn a_misspelled_or_unknown_document_is_reported_with_its_file_index_and_name() {
    let yaml = "\
apiVersion: v1
kind: Namespace
metadata:
  name: fine
---
apiVersion: v1
kind: Service
metadata:
  name: typo
  namespace: vphone
spec:
  tpye: LoadBalancer
  ports:
    - port: 4433
      protocl: UDP
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: unknown
  namespace: vphone
";
    let e = Manifests::default()
        .add_file("inline.yaml", yaml)
        .expect_err("a misspelled Service and an unknown kind passed");
    let report = format!("{e:#}");
    for part in [
        "inline.yaml document 1 (Service/typo)",
        "spec.tpye",
        "spec.ports.0.protocl",
        "inline.yaml document 2 (Ingress/unknown)",
    ] {
        assert!(
            report.contains(part),
            "the report does not say {part:?}: {report}"
        );
    }
    assert!(
        !report.contains("document 0"),
        "the Namespace is fine: {report}"
    );
}
