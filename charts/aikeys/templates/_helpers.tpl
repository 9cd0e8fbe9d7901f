{{/* Names and labels. */}}
{{- define "aikeys.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "aikeys.labels" -}}
app.kubernetes.io/name: aikeys
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "aikeys.selector" -}}
app.kubernetes.io/name: aikeys
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aikeys.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The ledger's Redis URL: bundled StatefulSet or external. */}}
{{- define "aikeys.redisURL" -}}
{{- if .Values.redis.bundled.enabled -}}
redis://{{ include "aikeys.fullname" . }}-redis:6379/0
{{- else -}}
{{- required "redis.external.url is required when redis.bundled.enabled is false" .Values.redis.external.url -}}
{{- end -}}
{{- end -}}

{{- define "aikeys.publicURL" -}}
{{- if .Values.gateway.publicURL -}}{{ .Values.gateway.publicURL }}
{{- else -}}{{ if .Values.ingress.tls.enabled }}https{{ else }}http{{ end }}://{{ .Values.ingress.host | default "localhost" }}/api/openai/v1
{{- end -}}
{{- end -}}

{{/* The public URL when it is known (gateway.publicURL, or the Ingress host), else empty: the pages
then name the URL the browser used rather than a guess. */}}
{{- define "aikeys.knownPublicURL" -}}
{{- if or .Values.gateway.publicURL (and .Values.ingress.enabled .Values.ingress.host) -}}
{{ include "aikeys.publicURL" . }}
{{- end -}}
{{- end -}}

{{/* true when ServiceMonitor/PrometheusRule should be rendered. */}}
{{- define "aikeys.promOperator" -}}
{{- $mode := toString .Values.monitoring.prometheusOperator -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{/* Environment shared by operator and gateway. */}}
{{- define "aikeys.commonEnv" -}}
- name: AIKEYS_REDIS_URL
  value: {{ include "aikeys.redisURL" . | quote }}
{{- if and (not .Values.redis.bundled.enabled) .Values.redis.external.passwordSecret.name }}
- name: AIKEYS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.passwordSecret.name }}
      key: {{ .Values.redis.external.passwordSecret.key }}
{{- end }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
- name: AIKEYS_CREDENTIALS_SECRET
  value: "{{ .Release.Namespace }}/{{ .Values.credentialsSecretName }}"
{{- end -}}

{{- define "aikeys.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
