{{- define "vigil.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The agents' ConfigMap: the operator writes it, the DaemonSet mounts it. */}}
{{- define "vigil.agentConfigMap" -}}
{{- printf "%s-agent" (include "vigil.fullname" .) -}}
{{- end -}}

{{- define "vigil.operatorName" -}}
{{- printf "%s-operator" (include "vigil.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
