"""A real one-node Kubernetes cluster in a network namespace of its own.

    from aikeys_dev.devstack.node.launch import start_node

    with start_node(tmp_path, images=[...]) as node:
        node.kubectl("get", "nodes")

Beside the process-only control plane of `controlplane`, this runs what a cluster's node runs:
kube-scheduler, kubelet and kube-proxy (built from the same Kubernetes module, `tools/k8s/build.sh
--node`), containerd, runc and the CNI plugins (Debian packages), and as pods CoreDNS and Traefik
(the Ingress controller) from images built locally (`aikeys_dev.devstack.images`).

How it keeps to the network rule (traffic only to loopback and to namespaces we made):

- every process runs in the network namespace `aikeys-n<i>`, reachable from the host over a veth
  pair (10.200.<i>.1 on the host, 10.200.<i>.2 the node); inside, the default route leads to a
  bridge without ports, so nothing leaves; pods may not reach the host side of the veth either
  (a DROP rule in the namespace's own FORWARD chain). The root namespace's iptables and
  ip_forward are never touched.
- containerd sends every registry to a closed port on its loopback (hosts files and
  HTTP(S)_PROXY), so an image that was not imported fails at once and no pull leaves the machine.
- CoreDNS has no `forward` plugin: names outside the cluster are NXDOMAIN.

How it leaves the machine as it found it: the node's processes also share a private mount
namespace (held by one `sleep`), so every mount they make (overlay snapshots, secret volumes,
pod network namespaces) disappears with them, and /run, /var/log and /var/lib/cni are the
node's own there. The kubelet changes machine-wide sysctls (`KUBELET_SYSCTLS`): their values
are saved in /run/aikeys-node before the first node starts and restored when the last one
stops. `stop()` kills every process in the node's namespace and cgroups, removes the cgroups
and the namespace, and restores the sysctls; a node whose launcher was SIGKILLed is cleaned up
the same way by the next `launch_node()` or by `reap_stale()` (`make cluster-down`).

One concept a module: `binaries` (what the node runs, built when missing), `slots` (a node's
names and addresses, and the machine-wide leases), `sysctls` (saved before the first node,
restored after the last), `configs` (containerd, CNI, kubelet, kube-proxy), `addons` (CoreDNS and
Traefik), `running` (the `Node` handle and its `stop()`), `bringup` (the steps that start it),
`teardown` (what a node, or a killed launcher's node, leaves behind), `launch` (`launch_node`,
`start_node`), `host` (running commands and polling on this machine).
"""
