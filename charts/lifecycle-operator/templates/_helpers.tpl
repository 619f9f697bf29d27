{{- define "lifecycle-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lifecycle-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "lifecycle-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: fixed, so no value can make the selector miss its pods. */}}
{{- define "lifecycle-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lifecycle-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every resource's labels: commonLabels first, so the chart's own labels win. */}}
{{- define "lifecycle-operator.labels" -}}
{{- $own := dict -}}
{{- $_ := set $own "app.kubernetes.io/version" (.Chart.AppVersion | toString) -}}
{{- $_ := set $own "app.kubernetes.io/managed-by" .Release.Service -}}
{{- $_ := set $own "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_") -}}
{{- $_ := set $own "app.kubernetes.io/name" (include "lifecycle-operator.name" .) -}}
{{- $_ := set $own "app.kubernetes.io/instance" .Release.Name -}}
{{- toYaml (merge $own (.Values.commonLabels | default dict)) -}}
{{- end -}}

{{/* Pod labels: user labels, then commonLabels, then the selector labels, which win. */}}
{{- define "lifecycle-operator.podLabels" -}}
{{- $sel := include "lifecycle-operator.selectorLabels" . | fromYaml -}}
{{- toYaml (merge $sel (deepCopy (.Values.commonLabels | default dict)) (deepCopy (.Values.podLabels | default dict))) -}}
{{- end -}}

{{- define "lifecycle-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lifecycle-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" or "false". Several replicas without leader election would all
reconcile and fight over the same Deployments: fail the render instead. */}}
{{- define "lifecycle-operator.leaderElection" -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if kindIs "bool" .Values.leaderElection -}}
{{- if and (gt $replicas 1) (not .Values.leaderElection) -}}
{{- fail (printf "replicaCount=%d needs leader election: several active operators would fight over the same Deployments. Set leaderElection=true (or leave it null)." $replicas) -}}
{{- end -}}
{{- .Values.leaderElection -}}
{{- else -}}
{{- gt $replicas 1 -}}
{{- end -}}
{{- end -}}

{{- define "lifecycle-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The hardened pod and container security contexts shared by the
operator and the uninstall Job. */}}
{{- define "lifecycle-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "lifecycle-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* Labels of the chart's other pods (helm test, uninstall Job): never the
operator's selector labels, so its Service and PDB do not count them. */}}
{{- define "lifecycle-operator.auxPodLabels" -}}
{{- $own := dict "app.kubernetes.io/instance" .context.Release.Name "app.kubernetes.io/component" .component -}}
{{- toYaml (merge $own (deepCopy (.context.Values.commonLabels | default dict))) -}}
{{- end -}}

{{/* The observer's log stream flags. A pool's per-namespace share above its
total fails the render (the operator would refuse it at startup). */}}
{{- define "lifecycle-operator.logStreamArgs" -}}
{{- range $hook, $flag := dict "preStop" "prestop" "postStart" "poststart" }}
{{- $pool := index $.Values.observer.logStreams $hook }}
{{- $total := int $pool.total }}
{{- $share := int $pool.perNamespace }}
{{- if gt $share $total }}
{{- fail (printf "observer.logStreams.%s.perNamespace=%d is above its total=%d: no namespace can hold more streams than the pool has." $hook $share $total) }}
{{- end }}
- --{{ $flag }}-log-streams={{ $total }}
- --{{ $flag }}-log-streams-per-namespace={{ $share }}
{{- end }}
{{- end -}}

{{/* The webhook's flags: its port, and the names the chart gives its
Service, Secret and configuration (or cert-manager's mounted Secret). */}}
{{- define "lifecycle-operator.webhookArgs" -}}
{{- if .Values.webhook.enabled }}
{{- $name := include "lifecycle-operator.fullname" . }}
- --webhook-addr=[::]:{{ .Values.webhook.port }}
{{- if .Values.webhook.certManager.enabled }}
- --webhook-cert-dir=/etc/lifecycle-operator/webhook
{{- else }}
- --webhook-configuration={{ $name }}
- --webhook-service={{ $name }}-webhook
- --webhook-secret={{ $name }}-webhook-tls
{{- end }}
{{- end }}
{{- end -}}
