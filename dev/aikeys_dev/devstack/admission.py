"""The chart's key-owner admission policy on a test or dev control plane (what `helm install` applies).

The manifests are the chart's own (`helm template --show-only templates/key-owner-policy.yaml`
with the pinned helm), so tests exercise exactly what ships. A ValidatingAdmissionPolicy takes
effect once the API server's policy informer has seen it (about a second): `apply_owner_policy`
returns only after a server-side dry run shows it refusing a forged owner.
"""

from __future__ import annotations

import subprocess
import time

from aikeys_dev.devstack.binaries import REPO_ROOT
from aikeys_dev.devstack.controlplane import ControlPlane

CHART = REPO_ROOT / "charts" / "aikeys"
TEMPLATE = "templates/key-owner-policy.yaml"
RELEASE = "aikeys-local"  # not "aikeys": a test may `helm install aikeys` beside it
PROBE_USER = "aikeys:owner-policy-probe"
_PROBE_RBAC = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: aikeys-owner-policy-probe}}
rules: [{{apiGroups: [aikeys.dev], resources: [aikeys], verbs: [create]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: aikeys-owner-policy-probe}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aikeys-owner-policy-probe}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{PROBE_USER}"}}]
"""
_PROBE_KEY = """
apiVersion: aikeys.dev/v1alpha1
kind: AIKey
metadata: {name: owner-policy-probe, namespace: default}
spec: {allocationRef: {name: probe}, owner: someone-else}
"""


def owner_policy(cp: ControlPlane, release: str = RELEASE) -> str:
    """The chart's policy, binding and ClusterRole, rendered by the pinned helm."""
    result = subprocess.run(
        [str(cp.binaries.helm), "template", release, str(CHART), "--show-only", TEMPLATE],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def apply_owner_policy(cp: ControlPlane, timeout: float = 30) -> float:
    """Apply the policy and wait until the API server enforces it; returns the seconds it took.
    Needs the AIKey CRD installed."""
    started = time.monotonic()
    cp.kubectl("apply", "-f", "-", stdin=owner_policy(cp))
    cp.kubectl("apply", "-f", "-", stdin=_PROBE_RBAC)
    try:
        while True:
            probe = cp.kubectl(
                "create", "--dry-run=server", f"--as={PROBE_USER}", "-f", "-", stdin=_PROBE_KEY, check=False
            )
            if probe.returncode != 0 and "spec.owner must be" in probe.stderr:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"the key-owner policy is not enforced after {timeout}s: {probe.stdout}{probe.stderr}"
                )
            time.sleep(0.2)
    finally:
        cp.kubectl("delete", "-f", "-", "--ignore-not-found", stdin=_PROBE_RBAC, check=False)
