#!/usr/bin/env bash
# Starts a single-node Kubernetes cluster as plain background processes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet.
# Idempotent: live components (by pid file) are reused, dead ones restarted; if
# nothing is alive but $STATE exists (a crash), the stale state is cleaned first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

START=$(date +%s)
READY_TIMEOUT=${SIDECAR_ORDER_READY_TIMEOUT:-180}

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
  [[ -x $CACHE_BIN/$b ]] || die "up: $CACHE_BIN/$b missing; run: bash e2e/cluster/build.sh"
done
[[ -x $KUBELET_BIN ]] || die "up: $KUBELET_BIN missing; run: KUBELET_VERSION=$KUBELET_VERSION bash e2e/cluster/build-kubelet.sh"
for b in containerd containerd-shim-runc-v2 ctr runc openssl python3 findmnt; do
  command -v "$b" >/dev/null || die "up: $b missing; run: bash e2e/cluster/deps.sh"
done
[[ $(id -u) == 0 ]] || die "up: must run as root (kubelet and containerd need it)"

# ---------------------------------------------------------------- stale state
any_alive=false
for c in "${COMPONENTS[@]}"; do pid_alive "$c" && any_alive=true; done
if [[ -d $STATE ]] && ! $any_alive; then
  log "up: $STATE exists but no component is running: cleaning stale state (down.sh)"
  bash "$CLUSTER_DIR/down.sh" || die "up: cleaning stale state with down.sh failed"
fi
# A different version's binaries must not reuse a running cluster.
if $any_alive && [[ -f $STATE/K8S_VERSION && "$(cat "$STATE/K8S_VERSION")" != "$K8S_VERSION" ]]; then
  die "up: a cluster of $(cat "$STATE/K8S_VERSION") is running from $STATE; run down.sh first"
fi
if $any_alive && [[ -s $STATE/KUBELET_BIN && "$(cat "$STATE/KUBELET_BIN")" != "$KUBELET_BIN" ]]; then
  die "up: a cluster with the kubelet $(cat "$STATE/KUBELET_BIN") is running from $STATE; run down.sh first"
fi
mkdir -p "$STATE" "$LOGS" "$PIDS" "$CERTS" "$STATE/cni" "$STATE/kubelet" "$STATE/etcd"
echo "$K8S_VERSION" > "$STATE/K8S_VERSION"
# kubelet.sh (node reboots) starts the same kubelet binary again.
echo "$KUBELET_BIN" > "$STATE/KUBELET_BIN"

HOST_IP=${SIDECAR_ORDER_HOST_IP:-$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)}
[[ -n $HOST_IP ]] || HOST_IP=$(hostname -I 2>/dev/null | awk '{print $1}')
[[ -n $HOST_IP ]] || die "up: cannot find this host's IPv4 address (set SIDECAR_ORDER_HOST_IP)"
echo "$HOST_IP" > "$STATE/HOST_IP"
SERVICE_IP=$(python3 -c "import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1])[1])" "$SERVICE_CIDR")
BRIDGE_IP=$(python3 -c "import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1])[1])" "$POD_CIDR")
# The node's address is the bridge's: the kubelet listens there only (kubelet.sh reads it).
echo "$BRIDGE_IP" > "$STATE/NODE_IP"

# ---------------------------------------------------------------- bridge
# Another interface routing the pod range (a podman or containerd bridge of
# the same range) would take our pods' traffic.
other=$(ip -4 -o route show root "$POD_CIDR" 2>/dev/null | grep -v " dev $CNI_BRIDGE " | head -1 || true)
[[ -z $other ]] || die "up: the pod range $POD_CIDR is already routed elsewhere ($other); set SIDECAR_ORDER_POD_CIDR to a free range"
# Nothing listens on all interfaces: the API server on 127.0.0.1, the kubelet
# on the bridge's address. The bridge is made here, before any pod (the CNI
# bridge plugin takes an existing bridge holding its gateway address), and
# only it may route to 127.0.0.1 (route_localnet), for the DNAT rule that
# takes pods to the API server.
ip link show "$CNI_BRIDGE" >/dev/null 2>&1 || ip link add "$CNI_BRIDGE" type bridge || die "up: could not create bridge $CNI_BRIDGE"
bridge_addrs=$(ip -4 -o addr show dev "$CNI_BRIDGE")
grep -q " inet $BRIDGE_IP/${POD_CIDR#*/} " <<<"$bridge_addrs" ||
  ip addr add "$BRIDGE_IP/${POD_CIDR#*/}" dev "$CNI_BRIDGE" || die "up: could not give $CNI_BRIDGE the address $BRIDGE_IP/${POD_CIDR#*/}"
ip link set "$CNI_BRIDGE" up
sysctl -qw "net.ipv4.conf.$CNI_BRIDGE.route_localnet=1" || die "up: could not set route_localnet on $CNI_BRIDGE"

# ---------------------------------------------------------------- certificates
PKI_LOG=$LOGS/pki.log
ossl() { openssl "$@" >>"$PKI_LOG" 2>&1 || { tail -n 20 "$PKI_LOG" >&2; die "up: step 'certificates' (openssl $1) failed; log: $PKI_LOG"; }; }

# issue NAME CN O [SANS]  -> $CERTS/NAME.{key,crt}
issue() {
  local name=$1 cn=$2 o=$3 sans=${4:-} ext
  [[ -s $CERTS/$name.crt && -s $CERTS/$name.key ]] && return 0
  ext=$CERTS/$name.ext
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $sans ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi
  } > "$ext"
  local subj="/CN=$cn"; [[ -n $o ]] && subj="/O=$o/CN=$cn"
  ossl genrsa -out "$CERTS/$name.key" 2048
  ossl req -new -key "$CERTS/$name.key" -subj "$subj" -out "$CERTS/$name.csr"
  ossl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$CERTS/$name.crt"
}

if [[ ! -s $CERTS/ca.crt || ! -s $CERTS/ca.key ]]; then
  log "up: generating CA and certificates in $CERTS"
  ossl genrsa -out "$CERTS/ca.key" 2048
  ossl req -x509 -new -key "$CERTS/ca.key" -subj "/CN=sidecar-order-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$CERTS/ca.crt"
fi
issue apiserver kube-apiserver "" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$HOST_IP,IP:$SERVICE_IP,IP:$BRIDGE_IP"
issue admin kubernetes-admin system:masters
issue controller-manager system:kube-controller-manager ""
issue scheduler system:kube-scheduler ""
issue kubelet "system:node:$NODE_NAME" system:nodes
issue apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
if [[ ! -s $CERTS/sa.key ]]; then
  ossl genrsa -out "$CERTS/sa.key" 2048
  ossl rsa -in "$CERTS/sa.key" -pubout -out "$CERTS/sa.pub"
fi

# kubeconfig FILE CERTNAME
write_kubeconfig() {
  local file=$1 name=$2
  python3 - "$file" "$API_SERVER" "$CERTS/ca.crt" "$CERTS/$name.crt" "$CERTS/$name.key" <<'PY'
import base64, sys
f, server, ca, crt, key = sys.argv[1:]
b = lambda p: base64.b64encode(open(p, "rb").read()).decode()
open(f + ".tmp", "w").write(f"""apiVersion: v1
kind: Config
clusters:
- name: sidecar-order
  cluster:
    server: {server}
    certificate-authority-data: {b(ca)}
users:
- name: user
  user:
    client-certificate-data: {b(crt)}
    client-key-data: {b(key)}
contexts:
- name: sidecar-order
  context: {{cluster: sidecar-order, user: user, namespace: default}}
current-context: sidecar-order
""")
PY
  mv "$file.tmp" "$file"; chmod 600 "$file"
}
write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler
write_kubeconfig "$STATE/kubelet.kubeconfig" kubelet
write_kubeconfig "$STATE/admin.kubeconfig" admin

# ---------------------------------------------------------------- process helpers
# start NAME CMD...: run in background in its own session unless already alive.
start() {
  local name=$1; shift
  if pid_alive "$name"; then
    log "up: $name already running (pid $(cat "$PIDS/$name.pid"))"
    return 0
  fi
  log "up: starting $name (log: $LOGS/$name.log)"
  echo "=== $(date -u +%FT%TZ) starting: $*" >>"$LOGS/$name.log"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  record_pid "$name" $!
  STARTED+=("$name")
}
STARTED=()

# wait_for NAME TIMEOUT CMD...: poll CMD until it succeeds; on timeout or death print the log.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name"; then
      tail_log "$name"; die "up: $name exited during startup; log: $LOGS/$name.log"
    fi
    if (( $(date +%s) > deadline )); then
      tail_log "$name"; die "up: $name not ready after ${timeout}s; log: $LOGS/$name.log"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- etcd
start etcd "$CACHE_BIN/etcd" --name sidecar-order --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "sidecar-order=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
  --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn
wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

# ---------------------------------------------------------------- kube-apiserver
start kube-apiserver "$CACHE_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address "$BRIDGE_IP" \
  --tls-cert-file "$CERTS/apiserver.crt" --tls-private-key-file "$CERTS/apiserver.key" \
  --client-ca-file "$CERTS/ca.crt" \
  --kubelet-client-certificate "$CERTS/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$CERTS/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$CERTS/sa.pub" --service-account-signing-key-file "$CERTS/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver 120 kubectl --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz
cp "$STATE/admin.kubeconfig" "$KUBECONFIG_OUT.tmp" && mv "$KUBECONFIG_OUT.tmp" "$KUBECONFIG_OUT"

# Pods reach the API server through the 'kubernetes' Service IP, as in-cluster clients do.
# There is no kube-proxy, so one DNAT rule stands in for it (best effort).
if command -v iptables >/dev/null; then
  if ! iptables -t nat -S SIDECAR-ORDER >/dev/null 2>&1; then
    { iptables -t nat -N SIDECAR-ORDER &&
      iptables -t nat -A SIDECAR-ORDER -d "$SERVICE_IP/32" -p tcp --dport 443 -j DNAT --to-destination "127.0.0.1:$API_PORT" &&
      iptables -t nat -I PREROUTING -j SIDECAR-ORDER && iptables -t nat -I OUTPUT -j SIDECAR-ORDER; } >>"$LOGS/iptables.log" 2>&1 ||
      log "up: WARNING: could not add the DNAT rule $SERVICE_IP:443 -> 127.0.0.1:$API_PORT (log: $LOGS/iptables.log); in-cluster clients cannot reach the API"
  fi
fi

# ---------------------------------------------------------------- controller-manager, scheduler
# No cloud here: the cloud node lifecycle controller is turned off where the
# release still has it (1.37 removed it and refuses its name).
kcm_controllers='*'
kcm_help=$("$CACHE_BIN/kube-controller-manager" --help 2>&1 || true)
grep -q cloud-node-lifecycle <<<"$kcm_help" && kcm_controllers='*,-cloud-node-lifecycle'
start kube-controller-manager "$CACHE_BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file "$CERTS/sa.key" --root-ca-file "$CERTS/ca.crt" \
  --cluster-signing-cert-file "$CERTS/ca.crt" --cluster-signing-key-file "$CERTS/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --controllers "$kcm_controllers" --v=1
start kube-scheduler "$CACHE_BIN/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --v=1

# ---------------------------------------------------------------- containerd + CNI
mkdir -p "$STATE/containerd"
cat > "$STATE/containerd/config.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$STATE/cni"
TOML
cat > "$STATE/cni/10-sidecar-order.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "sidecar-order",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni-ipam"
      }
    }
  ]
}
JSON
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 10\n' "$CONTAINERD_SOCK" "$CONTAINERD_SOCK" > "$STATE/crictl.yaml"
start containerd containerd --config "$STATE/containerd/config.toml" --log-level info
wait_for containerd 60 ctr -a "$CONTAINERD_SOCK" version

# ---------------------------------------------------------------- images
have_images=$(ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null || true)
if ! grep -qx "$BUSYBOX_IMAGE" <<<"$have_images" || ! grep -qx "$PAUSE_IMAGE" <<<"$have_images"; then
  bash "$CLUSTER_DIR/images.sh" || die "up: step 'images' failed; log: $LOGS/images.log"
fi

# ---------------------------------------------------------------- kubelet
resolv=/etc/resolv.conf; [[ -f $resolv ]] || resolv=""
cat > "$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $CERTS/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_PARENT
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
resolvConf: "$resolv"
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 87600h
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "256Mi"
  nodefs.inodesFree: "1%"
  imagefs.available: "256Mi"
  imagefs.inodesFree: "1%"
evictionPressureTransitionPeriod: 10s
serializeImagePulls: false
maxPods: 110
registerNode: true
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
runtimeRequestTimeout: 2m
containerLogMaxSize: 10Mi
containerLogMaxFiles: 3
protectKernelDefaults: false
YAML
# The kubelet's cgroupRoot must exist in every hierarchy; a v1 cpuset cgroup
# needs its cpus and mems before anything can join it.
for hier in /sys/fs/cgroup/*/; do
  [[ -e ${hier}cgroup.procs ]] || continue
  mkdir -p "${hier}$CGROUP_PARENT"
  for f in cpuset.cpus cpuset.mems; do
    if [[ -e ${hier}$f && -z $(cat "${hier}$CGROUP_PARENT/$f") ]]; then
      cat "${hier}$f" > "${hier}$CGROUP_PARENT/$f"
    fi
  done
done
# One command line for the kubelet, shared with kubelet.sh stop/start (node reboot tests).
bash "$CLUSTER_DIR/kubelet.sh" start || die "up: kubelet failed to start; log: $LOGS/kubelet.log"

# ---------------------------------------------------------------- node Ready + default SA
log "up: waiting for node $NODE_NAME to be Ready (timeout ${READY_TIMEOUT}s)"
deadline=$(( $(date +%s) + READY_TIMEOUT ))
until [[ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; do
  for c in "${COMPONENTS[@]}"; do
    pid_alive "$c" || { tail_log "$c"; die "up: $c died while waiting for the node; log: $LOGS/$c.log"; }
  done
  if (( $(date +%s) > deadline )); then
    kc get node "$NODE_NAME" -o yaml 2>&1 | sed -n '/conditions:/,/daemonEndpoints:/p' >&2 || true
    tail_log kubelet 60
    die "up: node $NODE_NAME not Ready after ${READY_TIMEOUT}s; log: $LOGS/kubelet.log"
  fi
  sleep 1
done
deadline=$(( $(date +%s) + 60 ))
until kc -n default get serviceaccount default >/dev/null 2>&1; do
  (( $(date +%s) > deadline )) && { tail_log kube-controller-manager; die "up: default ServiceAccount missing after 60s; log: $LOGS/kube-controller-manager.log"; }
  sleep 1
done

log "up: cluster ready in $(( $(date +%s) - START ))s: node $NODE_NAME Ready, Kubernetes $K8S_VERSION, kubelet $KUBELET_VERSION"
log "up: export KUBECONFIG=$KUBECONFIG_OUT   (logs: $LOGS, pids: $PIDS)"
