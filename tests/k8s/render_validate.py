"""Renders the kustomize base in deploy/kubernetes and checks it offline.

Rendering covers what the base uses (resources, namespace, strategic-merge patches of maps);
anything else in kustomization.yaml is refused rather than ignored. Every rendered object is
validated against the Kubernetes JSON schemas shipped by `kubernetes-validate` (strict: unknown
fields are errors), then the cross-file promises the README makes are checked.

Usage: render_validate.py DIR [KUBERNETES_VERSION...]; prints the rendered stream on success.
"""

import copy
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "patches"}


def key(obj):
    return (obj["kind"], obj["metadata"]["name"])


def merge(base, patch):
    """Strategic merge for maps (lists are replaced, as for lists without a merge key)."""
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)


def render(base_dir):
    kustomization = yaml.safe_load((base_dir / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise SystemExit(f"kustomization.yaml uses {sorted(unknown)}, which this renderer does not know")
    objects = []
    for res in kustomization.get("resources", []):
        objects += [d for d in yaml.safe_load_all((base_dir / res).read_text()) if d]
    by_key = {key(o): o for o in objects}
    if len(by_key) != len(objects):
        raise SystemExit("two resources share a kind and name")
    for p in kustomization.get("patches", []):
        patch = yaml.safe_load((base_dir / p["path"]).read_text())
        target = by_key.get(key(patch))
        if target is None:
            raise SystemExit(f"patch {p['path']} matches no resource")
        merge(target, patch)
    ns = kustomization.get("namespace")
    for o in objects:
        if ns and o["kind"] not in CLUSTER_SCOPED:
            o["metadata"]["namespace"] = ns
        if ns and o["kind"] == "ClusterRoleBinding":
            for s in o.get("subjects", []):
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = ns
    return objects


def check_promises(objects):
    """What the manifests promise beyond the schema; each failure names the promise."""
    errors = []
    by_key = {key(o): o for o in objects}
    ns = by_key.get(("Namespace", "llmtrace"))
    labels = (ns or {}).get("metadata", {}).get("labels", {})
    if labels.get("pod-security.kubernetes.io/enforce") != "privileged":
        errors.append("the llmtrace namespace must carry pod-security enforce=privileged")
    ds = by_key[("DaemonSet", "llmtrace")]
    pod = ds["spec"]["template"]["spec"]
    if not (pod.get("hostNetwork") and pod.get("hostPID")):
        errors.append("the agent needs hostNetwork and hostPID")
    (agent,) = [c for c in pod["containers"] if c["name"] == "agent"]
    sc = agent["securityContext"]
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        errors.append("capabilities must drop ALL before adding")
    if set(caps.get("add", [])) != {"BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "SYS_ADMIN"}:
        errors.append(f"unexpected capability set {caps.get('add')}")
    if sc.get("privileged") or sc.get("allowPrivilegeEscalation", True):
        errors.append("the agent must not be privileged nor escalate")
    for m in agent["volumeMounts"]:
        if m.get("mountPropagation") == "Bidirectional" and not sc.get("privileged"):
            errors.append(f"{m['name']}: Bidirectional propagation is only admitted for privileged containers")
    env = {e["name"]: e for e in agent.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        errors.append("NODE_NAME must come from the downward API (spec.nodeName)")
    if agent["readinessProbe"]["httpGet"]["path"] != "/readyz":
        errors.append("readiness must be /readyz")
    if "limits" not in agent.get("resources", {}) or "memory" not in agent["resources"]["limits"]:
        errors.append("the agent needs a memory limit")

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    cm = by_key[("ConfigMap", "llmtrace-config")]
    config = tomllib.loads(cm["data"]["config.toml"])
    ca_secret = volumes.get("ca", {}).get("secret", {})
    if ca_secret.get("secretName") != "llmtrace-ca" or ca_secret.get("defaultMode") != 0o400:
        errors.append("the CA must come from Secret llmtrace-ca with defaultMode 0400")
    if config.get("ca", {}).get("dir") != mounts.get("ca", {}).get("mountPath"):
        errors.append("[ca] dir must be where the CA Secret is mounted")
    password = config.get("sink", {}).get("clickhouse", {}).get("password_file", "")
    ch_mount = mounts.get("clickhouse", {}).get("mountPath")
    if not ch_mount or not password.startswith(ch_mount + "/"):
        errors.append("sink.clickhouse.password_file must be inside the ClickHouse Secret mount")
    if volumes.get("clickhouse", {}).get("secret", {}).get("secretName") != "llmtrace-clickhouse":
        errors.append("the ClickHouse password must come from Secret llmtrace-clickhouse")
    intercept = config.get("intercept", {})
    if intercept.get("cgroup") != mounts.get("cgroup", {}).get("mountPath"):
        errors.append("intercept.cgroup must be the mounted host cgroup2 root")
    if intercept.get("bpffs") != mounts.get("bpffs", {}).get("mountPath"):
        errors.append("intercept.bpffs must be the mounted host bpffs")
    port = int(config.get("admin", {}).get("listen", ":0").rsplit(":", 1)[1])
    if agent["readinessProbe"]["httpGet"]["port"] != port:
        errors.append("the probes must target admin.listen's port")
    return errors


def main():
    base_dir = Path(sys.argv[1])
    versions = sys.argv[2:] or ["1.29.0", "1.37.0"]
    objects = render(base_dir)
    failures = []
    for version in versions:
        for o in objects:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{version} {key(o)}: {e.message} at {list(e.path)}")
    failures += check_promises(objects)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))


if __name__ == "__main__":
    main()
