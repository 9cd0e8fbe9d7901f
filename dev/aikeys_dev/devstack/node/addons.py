"""The cluster add-ons every node runs as pods: CoreDNS (cluster DNS, nothing forwarded) and Traefik
(the Ingress controller), from images built on this machine."""

from __future__ import annotations

from aikeys_dev.devstack.node.configs import CLUSTER_DNS

COREDNS_IMAGE = "aikeys.local/coredns:{version}"
TRAEFIK_IMAGE = "aikeys.local/traefik:{version}"
INGRESS_CLASS = "traefik"


def addons_manifest(node_ip: str, versions: dict[str, str]) -> str:
    """CoreDNS (cluster DNS at CLUSTER_DNS, nothing forwarded) and Traefik (Ingress controller on
    the node's port 80, default IngressClass `traefik`), with images that are never pulled."""
    coredns = COREDNS_IMAGE.format(version=versions["COREDNS_VERSION"])
    traefik = TRAEFIK_IMAGE.format(version=versions["TRAEFIK_VERSION"])
    return f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    cluster.local in-addr.arpa ip6.arpa {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            ttl 30
        }}
        cache 30
        loadbalance
    }}
    . {{
        errors
        # no forward plugin: nothing outside the cluster is ever asked
        template ANY ANY {{
            rcode NXDOMAIN
        }}
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {coredns}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 10}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{add: [NET_BIND_SERVICE], drop: [ALL]}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {CLUSTER_DNS}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: traefik, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: traefik-ingress}}
rules:
- apiGroups: [""]
  resources: [services, secrets, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: traefik-ingress}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: traefik-ingress}}
subjects: [{{kind: ServiceAccount, name: traefik, namespace: kube-system}}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {INGRESS_CLASS}
  annotations: {{ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {{controller: traefik.io/ingress-controller}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: traefik, namespace: kube-system, labels: {{app: traefik}}}}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app: traefik}}}}
  template:
    metadata: {{labels: {{app: traefik}}}}
    spec:
      serviceAccountName: traefik
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      containers:
      - name: traefik
        image: {traefik}
        imagePullPolicy: Never
        args:
        - --entryPoints.web.address=:80
        - --entryPoints.traefik.address=:9000
        - --ping=true
        - --providers.kubernetesIngress=true
        - --providers.kubernetesIngress.ingressEndpoint.ip={node_ip}
        # Traefik's standard proxy cut 2-8 % of streamed (SSE) responses before their last chunk here
        # ("ReverseProxy read error during body copy: use of closed network connection", traefik
        # issue 11767); its fast proxy streamed 1,000 of 1,000 and flushes every event
        - --experimental.fastProxy=true
        - --global.checkNewVersion=false
        - --global.sendAnonymousUsage=false
        - --log.level=INFO
        - --accessLog=true
        readinessProbe: {{httpGet: {{path: /ping, port: 9000}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /ping, port: 9000}}, periodSeconds: 10}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{add: [NET_BIND_SERVICE], drop: [ALL]}}
"""
