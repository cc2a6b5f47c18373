#!/bin/sh
# Creates the daemons' Secrets (daemons/statefulset.yaml) and prints them as manifests; nothing secret
# is kept in the repository. Needs openssl.
#
#   deploy/k8s/make-secrets.sh NAMESPACE [OUT_DIR] | kubectl apply -n NAMESPACE -f -
#
# tscmig-peer-tls: a new CA, and one key and certificate every daemon presents to its peers, as
#   server and as client (mutual TLS), valid for *.tscmig-peers.NAMESPACE.svc (and the same under
#   .cluster.local) — the names the daemons advertise — and tscmig-peers itself. ca.crt, tls.crt, tls.key.
# tscmig-api-token: a random bearer token for the control API (key `token`).
# The PEM files stay in OUT_DIR (default: a new temporary directory, named on stderr) for clients
# that need the CA; delete it when done. Rotate by running it again and restarting the StatefulSet.
set -eu

ns=${1:?usage: make-secrets.sh NAMESPACE [OUT_DIR]}
case $ns in
  *[!a-z0-9-]* | -* | *- | "") echo "make-secrets.sh: $ns is not a namespace name (RFC 1123 label)" >&2; exit 2 ;;
esac
out=${2:-$(mktemp -d)}
mkdir -p "$out"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
  -subj "/CN=tscmig peer CA ($ns)" -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=tscmig-peers.$ns.svc" -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
cat > "$out/ext.cnf" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:*.tscmig-peers.$ns.svc, DNS:*.tscmig-peers.$ns.svc.cluster.local, DNS:tscmig-peers.$ns.svc, DNS:tscmig-peers.$ns.svc.cluster.local
EXT
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -days 365 -extfile "$out/ext.cnf" -out "$out/tls.crt" 2>/dev/null
openssl rand -base64 32 | tr -d '\n=' | tr '+/' '-_' > "$out/token"

b64() { base64 < "$1" | tr -d '\n'; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: tscmig-peer-tls
  labels:
    app.kubernetes.io/name: tscmig
    app.kubernetes.io/component: daemon
type: Opaque
data:
  ca.crt: $(b64 "$out/ca.crt")
  tls.crt: $(b64 "$out/tls.crt")
  tls.key: $(b64 "$out/tls.key")
---
apiVersion: v1
kind: Secret
metadata:
  name: tscmig-api-token
  labels:
    app.kubernetes.io/name: tscmig
    app.kubernetes.io/component: daemon
type: Opaque
data:
  token: $(b64 "$out/token")
YAML
rm -f "$out/ca.key" "$out/tls.csr" "$out/ext.cnf" "$out/ca.srl"
echo "make-secrets.sh: PEM files and token in $out" >&2
