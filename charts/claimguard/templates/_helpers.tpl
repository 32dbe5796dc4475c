{{/*
Object names are fixed (those of manifests/): one claimguard per cluster, and
the webhook configurations, ClusterRoles and Secret keep the names the docs,
alerts and `claimguard certs` use.
*/}}

{{- define "claimguard.labels" -}}
app.kubernetes.io/name: claimguard
app.kubernetes.io/part-of: claimguard
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The Deployment's selector: the same as manifests/, so the two never fight over pods. */}}
{{- define "claimguard.selectorLabels" -}}
app.kubernetes.io/name: claimguard
app.kubernetes.io/component: webhook
{{- end }}

{{- define "claimguard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The metrics listener runs when anything scrapes or alerts on it. */}}
{{- define "claimguard.metrics" -}}
{{- if or .Values.monitoring.serviceMonitor.enabled .Values.monitoring.prometheusRule.enabled -}}
true
{{- end -}}
{{- end }}

{{/*
The namespaceSelector every webhook shares: never the release's own namespace
(its pods must start while claimguard is down) nor the control plane's, nor a
namespace labelled claimguard.io/mode=off.
*/}}
{{- define "claimguard.namespaceExclusions" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: [{{ .Release.Namespace }}, kube-system]
- key: claimguard.io/mode
  operator: NotIn
  values: ["off"]
{{- end }}

{{/*
clientConfig of a webhook; "path" selects /validate or /mutate. With cert-manager
the CA injector fills caBundle; otherwise the CA the chart made or kept.
*/}}
{{- define "claimguard.clientConfig" -}}
service:
  name: claimguard
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- if .caBundle }}
caBundle: {{ .caBundle }}
{{- end }}
{{- end }}

{{/*
The CEL conditions. has() guards every read: a read that fails is an evaluation
error, and the API server hands it to failurePolicy.
*/}}
{{- define "claimguard.podUsesClaim" -}}
has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.persistentVolumeClaim) || has(v.ephemeral))
{{- end }}

{{- define "claimguard.podUsesPersistentClaim" -}}
has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.persistentVolumeClaim))
{{- end }}

{{- define "claimguard.pvcBeyondRWO" -}}
!has(object.spec.accessModes) || object.spec.accessModes.exists(m, m != 'ReadWriteOnce')
{{- end }}

{{- define "claimguard.scaleOrTemplateUsesClaim" -}}
(has(request.subResource) && request.subResource == 'scale') || (has(object.spec.template) && has(object.spec.template.spec) && has(object.spec.template.spec.volumes) && object.spec.template.spec.volumes.exists(v, has(v.persistentVolumeClaim) || has(v.ephemeral))) || (has(object.spec.jobTemplate) && has(object.spec.jobTemplate.spec) && has(object.spec.jobTemplate.spec.template) && has(object.spec.jobTemplate.spec.template.spec) && has(object.spec.jobTemplate.spec.template.spec.volumes) && object.spec.jobTemplate.spec.template.spec.volumes.exists(v, has(v.persistentVolumeClaim) || has(v.ephemeral)))
{{- end }}
