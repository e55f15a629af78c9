#!/usr/bin/env bash
# Validates examples/kubernetes offline: every manifest against the Kubernetes OpenAPI schemas
# bundled in the `kubernetes-validate` PyPI package (strict: unknown fields are errors), for the
# oldest version the example supports (1.30: preStop `sleep`) and the newest one the package knows.
# The kustomization is rendered with `kubectl kustomize` when kubectl is installed and validated
# too. The cross-file checks (probe ports vs admin.listen, mounts vs AGENT_CONFIG and identity,
# memory limit vs limits.total_buffer, the state claim and AGENT_STATE_DIR, the pause Job vs the
# Deployment) are in tests/it/kubernetes_manifests.rs (cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VALIDATE_VERSION=1.37.0
VERSIONS=(1.30.0 1.37.0)

work=$(mktemp -d /tmp/agent-k8s-validate.XXXXXX)
trap 'rm -rf "$work"' EXIT
if ! python3 -m venv "$work/venv" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$work/venv"
fi
"$work/venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"

manifests=(examples/kubernetes/configmap.yaml examples/kubernetes/pvc.yaml examples/kubernetes/deployment.yaml
  examples/kubernetes/networkpolicy.yaml
  examples/kubernetes/secret.yaml examples/kubernetes/pause-job.yaml)
if command -v kubectl >/dev/null; then
  kubectl kustomize examples/kubernetes >"$work/rendered.yaml"
  manifests+=("$work/rendered.yaml")
else
  echo "kubectl not installed: the kustomization is not rendered (the files are still validated)"
fi
for v in "${VERSIONS[@]}"; do
  "$work/venv/bin/kubernetes-validate" --strict --quiet -k "$v" "${manifests[@]}"
  echo "examples/kubernetes: valid for Kubernetes $v (strict schema, ${#manifests[@]} files)"
done
