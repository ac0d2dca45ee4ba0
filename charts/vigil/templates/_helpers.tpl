{{- define "vigil.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vigil.agentSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "vigil.operatorSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The agents' ConfigMap: the operator writes it, the DaemonSet mounts it. */}}
{{- define "vigil.agentConfigMap" -}}
{{- printf "%s-agent" (include "vigil.fullname" .) -}}
{{- end -}}

{{- define "vigil.operatorName" -}}
{{- printf "%s-operator" (include "vigil.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Where a mounted OTLP TLS secret lands in the agent. */}}
{{- define "vigil.otlpTlsDir" -}}/etc/vigil/otlp-tls{{- end -}}

{{/*
The node-level AgentConfig: agent.config with otlp.* merged into export.otlp
(agent.config's own export.otlp keys win over otlp.*, as the more specific).
*/}}
{{- define "vigil.agentConfig" -}}
{{- $config := deepCopy .Values.agent.config -}}
{{- $otlp := .Values.otlp -}}
{{- if $otlp.endpoint -}}
{{- $chartOtlp := dict "endpoint" $otlp.endpoint "protocol" $otlp.protocol -}}
{{- if $otlp.headers }}{{ $_ := set $chartOtlp "headers" $otlp.headers }}{{ end -}}
{{- if not (kindIs "invalid" $otlp.insecure) }}{{ $_ := set $chartOtlp "insecure" $otlp.insecure }}{{ end -}}
{{- if $otlp.tls.existingSecret -}}
{{- $_ := set $chartOtlp "certificate" (printf "%s/ca.crt" (include "vigil.otlpTlsDir" .)) -}}
{{- if $otlp.tls.clientAuth -}}
{{- $_ := set $chartOtlp "clientCertificate" (printf "%s/tls.crt" (include "vigil.otlpTlsDir" .)) -}}
{{- $_ := set $chartOtlp "clientKey" (printf "%s/tls.key" (include "vigil.otlpTlsDir" .)) -}}
{{- end -}}
{{- end -}}
{{- $export := get $config "export" | default dict -}}
{{- $mine := get $export "otlp" | default dict -}}
{{- $_ := set $export "otlp" (mergeOverwrite $chartOtlp $mine) -}}
{{- $_ := set $config "export" $export -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* --output: what the user chose, else otlp with an endpoint, else none. */}}
{{- define "vigil.agentOutput" -}}
{{- if .Values.agent.output -}}
{{- .Values.agent.output -}}
{{- else if .Values.otlp.endpoint -}}
otlp
{{- else -}}
none
{{- end -}}
{{- end -}}
