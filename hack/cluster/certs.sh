#!/usr/bin/env bash
# Creates the cluster's PKI and kubeconfigs under target/cluster/pki with
# openssl. Idempotent: a certificate is (re)issued only when it is missing,
# when its spec below changed, or when the CA changed; warm runs reuse
# everything.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

mkdir -p "$PKI_DIR"
cd "$PKI_DIR" || exit
umask 077
DAYS=3650

# RSA rather than ECDSA: busybox wget's TLS client (used by the self-tests)
# only verifies RSA signatures.
ensure_ca() {
  [[ -s ca.key && -s ca.crt ]] && return 0
  log "creating cluster CA"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
    -keyout ca.key -out ca.crt -subj "/CN=lifecycle-operator-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  rm -f ./*.spec # every leaf must be re-issued under the new CA
}

# ensure_cert NAME SUBJECT USAGE [SAN]
#   USAGE: client | server | both     SAN: e.g. "IP:10.244.0.1,DNS:localhost"
ensure_cert() {
  local name=$1 subject=$2 usage=$3 san=${4:-} eku spec
  spec="$subject|$usage|$san|$(sha256sum ca.crt | cut -c1-16)"
  if [[ -s $name.key && -s $name.crt && -f $name.spec && $(<"$name.spec") == "$spec" ]]; then
    return 0
  fi
  case $usage in
    client) eku=clientAuth ;;
    server) eku=serverAuth ;;
    both) eku=serverAuth,clientAuth ;;
  esac
  log "issuing certificate $name ($subject)"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z $san ]] || echo "subjectAltName=$san"
  } >"$name.ext"
  openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$name.key" -subj "$subject" -out "$name.csr" 2>/dev/null
  openssl x509 -req -sha256 -days "$DAYS" -in "$name.csr" -CA ca.crt -CAkey ca.key \
    -CAcreateserial -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  echo "$spec" >"$name.spec"
}

# kubeconfig FILE USER CERTNAME: a kubeconfig with the client cert embedded.
write_kubeconfig() {
  local file=$1 user=$2 cert=$3 tmp
  tmp=$(mktemp "$file.XXXX")
  cat >"$tmp" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: lco
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$cert.crt")
    client-key-data: $(base64 -w0 "$cert.key")
contexts:
- name: lco
  context: {cluster: lco, user: $user}
current-context: lco
KCFG
  # Rewrite only on change so a warm run leaves mtimes alone.
  if cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv "$tmp" "$file"; fi
}

ensure_ca
apiserver_sans="IP:$NODE_IP,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,DNS:kubernetes,DNS:kubernetes.default"
apiserver_sans+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
ensure_cert apiserver "/CN=kube-apiserver" server "$apiserver_sans"
# The apiserver's client cert for kubelet API calls (logs, exec, port-forward).
# system:masters, as kubeadm did, so no extra RBAC binding is needed.
ensure_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
ensure_cert admin "/O=system:masters/CN=lco-admin" client
ensure_cert controller-manager "/CN=system:kube-controller-manager" client
ensure_cert scheduler "/CN=system:kube-scheduler" client
ensure_cert kube-proxy "/CN=system:kube-proxy" client
ensure_cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" client
ensure_cert kubelet-server "/CN=$NODE_NAME" server "IP:$NODE_IP,DNS:$NODE_NAME"

if [[ ! -s sa.key || ! -s sa.pub ]]; then
  log "creating service-account signing key"
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi

write_kubeconfig "$KUBECONFIG_PATH" lco-admin admin
write_kubeconfig controller-manager.kubeconfig system:kube-controller-manager controller-manager
write_kubeconfig scheduler.kubeconfig system:kube-scheduler scheduler
write_kubeconfig kube-proxy.kubeconfig system:kube-proxy kube-proxy
write_kubeconfig kubelet.kubeconfig "system:node:$NODE_NAME" kubelet-client
