{{- define "ironlb.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "ironlb.labels" -}}
app.kubernetes.io/name: ironlb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ironlb.controllerSelector" -}}
app.kubernetes.io/name: ironlb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "ironlb.controllerServiceAccount" -}}
{{- default (printf "%s-controller" (include "ironlb.name" .)) .Values.serviceAccounts.controller.name -}}
{{- end -}}

{{- define "ironlb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ironlb.speakerSelector" -}}
app.kubernetes.io/name: ironlb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: speaker
{{- end -}}

{{- define "ironlb.speakerServiceAccount" -}}
{{- default (printf "%s-speaker" (include "ironlb.name" .)) .Values.serviceAccounts.speaker.name -}}
{{- end -}}
