//! The command line: flags, and the `analyze` command's input and output.
//!
//! Installed as `kubectl-sidecar_order` (the file kubectl's plugin lookup
//! runs for `kubectl sidecar-order`), the binary is the same program; its
//! help names it `kubectl sidecar-order`. `show` and live `analyze` take
//! kubectl's `-n/--namespace`, `--context` and `--kubeconfig`, before or
//! after the command, as kubectl does.

use crate::analyze::{Analysis, analyze_on};
use crate::input::{self, InputError};
use crate::judge::Config;
use crate::kubelet::KubeletVersion;
use crate::render;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::{Event, Pod};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file name kubectl runs for `kubectl sidecar-order`.
pub const KUBECTL_PLUGIN_NAME: &str = "kubectl-sidecar_order";

#[derive(Parser, Debug)]
#[command(
    name = "sidecar-order",
    version,
    about = "Verifies that Kubernetes native sidecars start and stop in the promised order"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Judge one pod from saved kubectl output (--pod/--events) or live (-n NAMESPACE POD).
    Analyze(AnalyzeArgs),
    /// Print the SidecarOrderReport CustomResourceDefinition (YAML).
    Crd,
    /// Run the controller: watch pods and events, write reports, serve metrics.
    Run(RunArgs),
    /// Print a stored SidecarOrderReport as a table (summary, violations, timeline).
    Show(ShowArgs),
    /// Run probe pods in a temporary namespace: does this cluster's kubelet keep the native-sidecar promises?
    Conformance(ConformanceArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ConformanceOutput {
    Table,
    Json,
    Junit,
}

#[derive(Args, Debug)]
pub struct ConformanceArgs {
    /// The namespace to run in (default: a new `sidecar-order-conformance-XXXXXX`, deleted at the end). An existing one is kept; only the probes are deleted.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The probes' image: needs sh, sleep, trap and touch (pulled IfNotPresent).
    #[arg(long, default_value = "busybox:1.36")]
    pub image: String,
    /// Only nodes with these labels (`key=value[,key=value]`); selected nodes are used even when tainted.
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = crate::conformance::runner::parse_node_selector)]
    pub node_selector: Option<std::collections::BTreeMap<String, String>>,
    /// One run per node; `--per-node=LABEL`: one per value of that node label (a node pool). Default: one run, on the first eligible node by name.
    #[arg(long, value_name = "LABEL", num_args = 0..=1, default_missing_value = "")]
    pub per_node: Option<String>,
    /// How long each probe may take before it is judged Indeterminate (e.g. 180s, 5m).
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Leave the namespace and the probes for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Only this promise (repeat for several; default: the whole catalogue).
    #[arg(long = "promise", value_name = "ID")]
    pub promises: Vec<String>,
    /// The kubeconfig context (default: the current one).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t = ConformanceOutput::Table)]
    pub output: ConformanceOutput,
}

impl ConformanceArgs {
    pub fn options(&self) -> crate::conformance::runner::Options {
        use crate::conformance::runner::{Options, PerNode};
        Options {
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            node_selector: self.node_selector.clone().unwrap_or_default(),
            per_node: match self.per_node.as_deref() {
                None => PerNode::Off,
                Some("") => PerNode::Node,
                Some(label) => PerNode::Label(label.to_string()),
            },
            timeout: self.timeout,
            keep: self.keep,
            promises: self.promises.clone(),
            context: self.context.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// `kubectl get pod -o json|yaml` output (one Pod or a List); `-` reads standard input.
    #[arg(long, value_name = "FILE", conflicts_with = "pod_name")]
    pub pod: Option<String>,
    /// `kubectl get events -o json|yaml` output; events of other objects are ignored.
    #[arg(long, value_name = "FILE", requires = "pod")]
    pub events: Option<String>,
    /// Namespace of the live pod (default: the kubeconfig context's).
    #[arg(short = 'n', long, conflicts_with = "pod")]
    pub namespace: Option<String>,
    /// The kubeconfig context to read the live pod through (default: the current one).
    #[arg(long, value_name = "CONTEXT", conflicts_with = "pod")]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE", conflicts_with = "pod")]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the live pod to read through the kubeconfig.
    #[arg(value_name = "POD", required_unless_present = "pod")]
    pub pod_name: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Seconds beyond the pod's grace period a sidecar may keep running after every app container exited (Never/OnFailure pods).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub outlive_seconds: i64,
    /// The kubelet version of the pod's node (its `status.nodeInfo.kubeletVersion`, e.g. v1.32.1): judge by that version's promises and name its known bugs. Live, the node is read when this is absent.
    #[arg(long, value_name = "vX.Y.Z")]
    pub kubelet_version: Option<KubeletVersion>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Namespace of the report (the pod's; default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kubeconfig context (default: the current one).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The report's name (`kubectl get sor`), or a pod's name: its newest report.
    pub name: String,
}

/// Parses the command line of this process; exits with clap's message
/// (status 2) on bad usage, or after printing the help or the version.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses a command line. Run as `kubectl-sidecar_order`, the help names
/// `kubectl sidecar-order`. kubectl's flags given before the command
/// (`-n shop show web`) are moved after it, where the command's own are.
pub fn try_parse_from(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let args = kubectl_flags_after_command(args.into_iter().collect());
    let mut cmd = Cli::command();
    if args
        .first()
        .is_some_and(|a| is_kubectl_plugin(Path::new(a)))
    {
        cmd = cmd.bin_name("kubectl sidecar-order");
    }
    let matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// True when the program was started as `kubectl-sidecar_order` (by kubectl or by hand).
pub fn is_kubectl_plugin(argv0: &Path) -> bool {
    argv0.file_stem().is_some_and(|n| n == KUBECTL_PLUGIN_NAME)
}

/// `[prog, -n, shop, --context=c, show, web]` -> `[prog, show, -n, shop,
/// --context=c, web]`: only kubectl's connection flags before the first word
/// move; anything else leaves the line as it is, for clap to judge.
fn kubectl_flags_after_command(args: Vec<OsString>) -> Vec<OsString> {
    const WITH_VALUE: [&str; 4] = ["-n", "--namespace", "--context", "--kubeconfig"];
    let mut moved = Vec::new();
    let mut i = 1;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        if WITH_VALUE.contains(&arg) && i + 1 < args.len() {
            moved.extend_from_slice(&args[i..i + 2]);
            i += 2;
        } else if ["--namespace=", "--context=", "--kubeconfig="]
            .iter()
            .any(|p| arg.starts_with(p))
            || (arg.starts_with("-n") && !arg.starts_with("--") && arg.len() > 2)
        {
            moved.push(args[i].clone());
            i += 1;
        } else {
            break;
        }
    }
    let is_command = args
        .get(i)
        .and_then(|a| a.to_str())
        .is_some_and(|a| !a.starts_with('-'));
    if moved.is_empty() || !is_command {
        return args;
    }
    let mut out = Vec::with_capacity(args.len());
    out.push(args[0].clone());
    out.push(args[i].clone());
    out.extend(moved);
    out.extend_from_slice(&args[i + 1..]);
    out
}

/// A client as kubectl would build it from `--kubeconfig` and `--context`:
/// that file (else $KUBECONFIG or ~/.kube/config, then the in-cluster
/// service account), that context (else the current one).
pub async fn kube_client(
    context: Option<&str>,
    kubeconfig: Option<&Path>,
) -> Result<kube::Client, AnalyzeError> {
    let config = kube_config(context, kubeconfig).await?;
    kube::Client::try_from(config)
        .map_err(|e| AnalyzeError::Live(format!("cannot build a client from the kubeconfig: {e}")))
}

/// The client configuration `kube_client` uses (with the server's address).
pub async fn kube_config(
    context: Option<&str>,
    kubeconfig: Option<&Path>,
) -> Result<kube::Config, AnalyzeError> {
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let cannot = |e: &dyn std::fmt::Display| {
        AnalyzeError::Live(format!("cannot build a client from the kubeconfig: {e}"))
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                AnalyzeError::Live(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| cannot(&e))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| cannot(&e))?,
        (None, None) => Config::infer().await.map_err(|e| cannot(&e))?,
    };
    Ok(config)
}

/// Reads a stored report (by its name, or its pod's) and renders it.
pub async fn run_show(args: &ShowArgs) -> Result<String, AnalyzeError> {
    use crate::crd::SidecarOrderReport;
    use kube::api::{Api, ListParams};
    let client = kube_client(args.context.as_deref(), args.kubeconfig.as_deref()).await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<SidecarOrderReport> = Api::namespaced(client, &ns);
    let fail = |e: kube::Error| AnalyzeError::Live(format!("cannot read reports in {ns}: {e}"));
    let report = match api.get_opt(&args.name).await.map_err(fail)? {
        Some(r) => r,
        None => api
            .list(&ListParams::default())
            .await
            .map_err(fail)?
            .items
            .into_iter()
            .filter(|r| r.spec.pod_name == args.name)
            .max_by_key(|r| r.metadata.creation_timestamp.clone())
            .ok_or_else(|| {
                AnalyzeError::Live(format!(
                    "no report named {} or for pod {} in {ns}",
                    args.name, args.name
                ))
            })?,
    };
    let Some(status) = report.status else {
        return Err(AnalyzeError::Live(format!(
            "report {ns}/{} has no status yet",
            args.name
        )));
    };
    let a = Analysis {
        namespace: ns,
        name: report.spec.pod_name,
        kubelet: status
            .kubelet_version
            .as_deref()
            .and_then(KubeletVersion::parse),
        report: status.report,
        events: None,
    };
    Ok(render::table(&a))
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Namespace to watch (repeat for several); all namespaces when absent.
    #[arg(
        long = "namespace",
        short = 'n',
        env = "SIDECAR_ORDER_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Only pods matching this label selector.
    #[arg(long, short = 'l', env = "SIDECAR_ORDER_LABEL_SELECTOR", value_parser = crate::controller::selector::PodSelector::parse)]
    pub label_selector: Option<crate::controller::selector::PodSelector>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "SIDECAR_ORDER_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: std::net::SocketAddr,
    /// How long a report is kept after its pod ended (e.g. 24h, 30m, 90s).
    #[arg(long, env = "SIDECAR_ORDER_REPORT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub report_ttl: std::time::Duration,
    /// Most reports kept in the watched namespaces: over it, the reports of
    /// the pods that are gone and ended first are deleted (the report of a
    /// pod that still exists is never deleted).
    #[arg(long, env = "SIDECAR_ORDER_MAX_REPORTS", default_value_t = 10_000)]
    pub max_reports: usize,
    /// Seconds beyond the pod's grace period a sidecar may keep running after every app container exited (Never/OnFailure pods).
    #[arg(long, env = "SIDECAR_ORDER_OUTLIVE_SECONDS", default_value_t = 30)]
    pub outlive_seconds: i64,
    /// Report writes in flight at once (1-64). Each is one API call; more
    /// drain a backlog (a burst of new pods) sooner at the cost of more
    /// parallel load on the API server.
    #[arg(long, env = "SIDECAR_ORDER_WRITE_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub write_concurrency: u16,
    /// Elect a leader through a coordination Lease; only the leader writes.
    #[arg(long, env = "SIDECAR_ORDER_LEADER_ELECT")]
    pub leader_elect: bool,
    #[arg(
        long,
        env = "SIDECAR_ORDER_LEASE_NAME",
        default_value = "sidecar-order-controller"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "sidecar-order-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: the host name, which
    /// in a pod is the pod's name; two replicas must never share one).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    #[arg(long, env = "SIDECAR_ORDER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// The host name (a pod's own name), else one made unique by the process
/// id and the start time: never the same in two containers.
fn default_identity() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("sidecar-order-{}-{nanos:08x}", std::process::id())
        })
}

/// Parses `24h`, `30m`, `90s` or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 24h, 30m or 90s"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    Ok(std::time::Duration::from_secs(n * mult))
}

impl RunArgs {
    pub fn settings(&self) -> crate::controller::run::Settings {
        crate::controller::run::Settings {
            namespaces: self.namespaces.clone(),
            label_selector: self.label_selector.clone(),
            metrics_addr: self.metrics_addr,
            report_ttl: self.report_ttl,
            max_reports: self.max_reports,
            outlive_secs: self.outlive_seconds,
            write_concurrency: usize::from(self.write_concurrency),
            leader_elect: self.leader_elect,
            lease_name: self.lease_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            identity: self.identity.clone().unwrap_or_else(default_identity),
        }
    }
}

/// A failure of the analyze command: bad input (exit 2) or an API error.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Pod(String),
    #[error("{0}")]
    Live(String),
}

/// How a file is named in messages.
fn shown(file: &str) -> &str {
    if file == "-" { "<stdin>" } else { file }
}

fn read(file: &str) -> Result<String, InputError> {
    let mut text = String::new();
    let res = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    res.map_err(|source| InputError::Read {
        file: if file == "-" {
            "<stdin>".into()
        } else {
            file.into()
        },
        source,
    })?;
    Ok(text)
}

/// The live pod, its events, and its node's kubelet version (`None`, with
/// one line on standard error, when the node cannot be read).
async fn live(
    args: &AnalyzeArgs,
    name: &str,
) -> Result<(Vec<Pod>, Vec<Event>, Option<KubeletVersion>), AnalyzeError> {
    use kube::api::{Api, ListParams};
    let client = kube_client(args.context.as_deref(), args.kubeconfig.as_deref()).await?;
    let ns = args
        .namespace
        .as_deref()
        .unwrap_or(client.default_namespace())
        .to_string();
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get(name)
        .await
        .map_err(|e| AnalyzeError::Live(format!("cannot read pod {ns}/{name}: {e}")))?;
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={name}"
    ));
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&lp)
        .await
        .map_err(|e| AnalyzeError::Live(format!("cannot list events of pod {ns}/{name}: {e}")))?;
    let kubelet = match (
        args.kubelet_version,
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
    ) {
        (Some(k), _) => Some(k),
        (None, None) => None,
        (None, Some(node)) => match node_kubelet(client, node).await {
            Ok(k) => k,
            Err(why) => {
                eprintln!("{why}; judged without the kubelet version (latest promises)");
                None
            }
        },
    };
    Ok((vec![pod], events.items, kubelet))
}

/// The kubelet version node `node` reports; an error says why it could not
/// be read, in one line.
async fn node_kubelet(client: kube::Client, node: &str) -> Result<Option<KubeletVersion>, String> {
    use k8s_openapi::api::core::v1::Node;
    match kube::Api::<Node>::all(client).get(node).await {
        Ok(n) => Ok(crate::observe::kubelet_version_of(&n)),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(format!(
            "cannot read node {node}: forbidden (get nodes needs a ClusterRole)"
        )),
        Err(e) => Err(format!("cannot read node {node}: {e}")),
    }
}

/// Saved output must hold pods as the API served them: a manifest (no
/// status) or an empty list would give a verdict about nothing.
fn saved_pods_usable(file: &str, pods: &[Pod]) -> Result<(), AnalyzeError> {
    if pods.is_empty() {
        return Err(AnalyzeError::Pod(format!("{file}: holds no pods")));
    }
    // (A pod without a spec either gets the engine's own error.)
    if let Some(p) = pods.iter().find(|p| p.spec.is_some() && p.status.is_none()) {
        let name = p.metadata.name.as_deref().unwrap_or("<unnamed>");
        return Err(AnalyzeError::Pod(format!(
            "{file}: pod {name} has no status: this is a manifest, not `kubectl get pod -o json` output"
        )));
    }
    Ok(())
}

/// Runs `analyze`; returns the analyses and their printed form.
pub async fn run_analyze(args: &AnalyzeArgs) -> Result<(Vec<Analysis>, String), AnalyzeError> {
    let cfg = Config {
        outlive_secs: args.outlive_seconds,
    };
    let (pods, events, kubelet) = match (&args.pod, &args.pod_name) {
        (Some(file), _) => {
            if file == "-" && args.events.as_deref() == Some("-") {
                return Err(AnalyzeError::Pod(
                    "--pod and --events cannot both read standard input".into(),
                ));
            }
            let pods = input::pods(shown(file), &read(file)?)?;
            saved_pods_usable(shown(file), &pods)?;
            let events = match &args.events {
                Some(f) => input::events(shown(f), &read(f)?)?,
                None => Vec::new(),
            };
            (pods, events, args.kubelet_version)
        }
        (None, Some(name)) => live(args, name).await?,
        (None, None) => return Err(AnalyzeError::Pod("give --pod FILE or a pod name".into())),
    };
    let analyses = analyze_on(&pods, &events, &cfg, kubelet).map_err(|e| {
        AnalyzeError::Pod(format!("{}: {e}", args.pod.as_deref().map_or("pod", shown)))
    })?;
    let text = print(&analyses, args.output);
    Ok((analyses, text))
}

fn print(analyses: &[Analysis], output: Output) -> String {
    /// A report as the status stores it: with the kubelet version when known.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Judged<'a> {
        #[serde(flatten)]
        report: &'a crate::report::Report,
        #[serde(skip_serializing_if = "Option::is_none")]
        kubelet_version: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct Named<'a> {
        namespace: &'a str,
        name: &'a str,
        report: Judged<'a>,
    }
    let named: Vec<Named> = analyses
        .iter()
        .map(|a| Named {
            namespace: &a.namespace,
            name: &a.name,
            report: Judged {
                report: &a.report,
                kubelet_version: a.kubelet.map(|k| k.to_string()),
            },
        })
        .collect();
    match output {
        Output::Table => analyses
            .iter()
            .map(render::table)
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Json => {
            let v = match named.as_slice() {
                [one] => serde_json::to_string_pretty(&one.report),
                many => serde_json::to_string_pretty(many),
            };
            v.expect("reports serialize") + "\n"
        }
        Output::Yaml => {
            let v = match named.as_slice() {
                [one] => serde_saphyr::to_string(&one.report),
                many => serde_saphyr::to_string(&many),
            };
            v.expect("reports serialize")
        }
    }
}

/// The exit code for a finished analysis: 1 when an error-severity rule broke.
pub fn exit_code(analyses: &[Analysis]) -> u8 {
    u8::from(analyses.iter().any(|a| a.report.errors().next().is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn parsed(args: &[&str]) -> Cli {
        try_parse_from(line(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn kubectl_flags_before_the_command_move_after_it() {
        let moved = |args: &[&str]| kubectl_flags_after_command(line(args));
        assert_eq!(
            moved(&[
                "k",
                "-n",
                "shop",
                "--context=prod",
                "--kubeconfig",
                "/k",
                "show",
                "web"
            ]),
            line(&[
                "k",
                "show",
                "-n",
                "shop",
                "--context=prod",
                "--kubeconfig",
                "/k",
                "web"
            ])
        );
        assert_eq!(
            moved(&["k", "-nshop", "analyze", "web"]),
            line(&["k", "analyze", "-nshop", "web"])
        );
        // Nothing to move, or something that is not kubectl's: left to clap.
        for same in [
            &["k", "show", "-n", "shop", "web"][..],
            &["k", "--help"],
            &["k", "-n", "shop", "--help"],
            &["k", "-n"],
            &["k"],
        ] {
            assert_eq!(moved(same), line(same), "{same:?}");
        }
    }

    #[test]
    fn show_and_analyze_take_kubectls_connection_flags() {
        let Command::Show(s) = parsed(&[
            "kubectl-sidecar_order",
            "--context",
            "prod",
            "show",
            "--kubeconfig=/tmp/k",
            "-n",
            "shop",
            "web",
        ])
        .command
        else {
            panic!("not show")
        };
        assert_eq!(s.namespace.as_deref(), Some("shop"));
        assert_eq!(s.context.as_deref(), Some("prod"));
        assert_eq!(s.kubeconfig.as_deref(), Some(Path::new("/tmp/k")));
        assert_eq!(s.name, "web");
        let Command::Analyze(a) = parsed(&[
            "/usr/local/bin/kubectl-sidecar_order",
            "-n",
            "shop",
            "analyze",
            "--context",
            "prod",
            "web",
        ])
        .command
        else {
            panic!("not analyze")
        };
        assert_eq!(
            (
                a.namespace.as_deref(),
                a.context.as_deref(),
                a.pod_name.as_deref()
            ),
            (Some("shop"), Some("prod"), Some("web"))
        );
        // Saved files are not read through a cluster: no context for them.
        for flag in ["--context=prod", "--kubeconfig=/k", "--namespace=shop"] {
            let args = ["sidecar-order", "analyze", "--pod", "p.json", flag];
            let err = try_parse_from(line(&args)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{flag}: {err}");
        }
    }

    #[test]
    fn the_plugin_names_itself_as_kubectl_does() {
        let help = |argv0: &str| {
            try_parse_from(line(&[argv0, "--help"]))
                .unwrap_err()
                .render()
                .to_string()
        };
        assert!(
            help("/home/u/bin/kubectl-sidecar_order")
                .contains("Usage: kubectl sidecar-order <COMMAND>")
        );
        assert!(help("sidecar-order").contains("Usage: sidecar-order <COMMAND>"));
        assert!(is_kubectl_plugin(Path::new(
            "C:/bin/kubectl-sidecar_order.exe"
        )));
        assert!(!is_kubectl_plugin(Path::new("kubectl-sidecar_order2")));
    }

    #[test]
    fn run_keeps_its_namespace_flags() {
        let Command::Run(r) =
            parsed(&["sidecar-order", "-n", "a", "run", "--namespace=b,c"]).command
        else {
            panic!("not run")
        };
        assert_eq!(r.namespaces, ["a", "b", "c"]);
    }

    #[test]
    fn analyze_takes_a_kubelet_version() {
        let Command::Analyze(a) = parsed(&[
            "sidecar-order",
            "analyze",
            "--pod",
            "p.json",
            "--kubelet-version",
            "v1.32.1-eks-abc",
        ])
        .command
        else {
            panic!("not analyze")
        };
        assert_eq!(a.kubelet_version, KubeletVersion::parse("v1.32.1"));
        let err = try_parse_from(line(&[
            "sidecar-order",
            "analyze",
            "--pod",
            "p.json",
            "--kubelet-version",
            "1.32",
        ]))
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not a kubelet version"), "{err}");
    }
}
