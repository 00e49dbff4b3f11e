{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "flow-collector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, prefixed to the chart name unless it contains it. */}}
{{- define "flow-collector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flow-collector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The partition, made fit for a label value. */}}
{{- define "flow-collector.partitionLabel" -}}
{{- $p := toString (default "default" .Values.config.partition) -}}
{{- regexReplaceAll "[^A-Za-z0-9_.-]" $p "-" | trunc 63 | trimAll "-_." -}}
{{- end }}

{{- define "flow-collector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flow-collector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flow-collector.labels" -}}
helm.sh/chart: {{ include "flow-collector.chart" . }}
{{ include "flow-collector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: flow-collector
app.kubernetes.io/part-of: serviceradar
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with include "flow-collector.partitionLabel" . }}
serviceradar.io/partition: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "flow-collector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flow-collector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flow-collector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The port of an "address:port" string ("0.0.0.0:2055", "[::]:2055"), as an int. */}}
{{- define "flow-collector.portOf" -}}
{{- regexFind "[0-9]+$" (toString .) | int -}}
{{- end }}

{{/* The metrics port, from config.metrics_addr. */}}
{{- define "flow-collector.metricsPort" -}}
{{- include "flow-collector.portOf" .Values.config.metrics_addr -}}
{{- end }}

{{/*
The ports of the listeners, as a JSON list of {name, port, protocol}: one per listener,
taken from its listen_addr; UDP, or TCP for transport "tcp" and "tls" (IPFIX over TCP /
TLS). A kind of listener with one port names it after the protocol ("netflow", "sflow",
"ipfix-tcp", "ipfix-tls"); with several, "<name>-<port>". Refuses two listeners on one
port and protocol: the Service could not tell them apart.
*/}}
{{- define "flow-collector.listenerPorts" -}}
{{- $count := dict -}}
{{- range .Values.config.listeners -}}
{{- $base := include "flow-collector.portBase" . -}}
{{- $_ := set $count $base (add1 (get $count $base | default 0)) -}}
{{- end -}}
{{- $ports := list -}}
{{- $seen := dict -}}
{{- range $i, $l := .Values.config.listeners -}}
{{- $port := include "flow-collector.portOf" $l.listen_addr | int -}}
{{- $protocol := "UDP" -}}
{{- if has (toString $l.transport) (list "tcp" "tls") -}}
{{- $protocol = "TCP" -}}
{{- end -}}
{{- $key := printf "%s/%d" $protocol $port -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "config.listeners[%d].listen_addr: port %d is already used by config.listeners[%v] (%s); one Service port per listener port and protocol" $i $port (get $seen $key) $protocol) -}}
{{- end -}}
{{- $_ := set $seen $key $i -}}
{{- $name := include "flow-collector.portBase" $l -}}
{{- if gt (int (get $count $name)) 1 -}}
{{- $name = printf "%s-%d" $name $port -}}
{{- end -}}
{{- $ports = append $ports (dict "name" $name "port" $port "protocol" $protocol) -}}
{{- end -}}
{{- toJson $ports -}}
{{- end }}

{{/* A listener's port name before any "-<port>" suffix: its protocol, or ipfix-tcp / ipfix-tls. */}}
{{- define "flow-collector.portBase" -}}
{{- if eq (toString .transport) "tcp" -}}
ipfix-tcp
{{- else if eq (toString .transport) "tls" -}}
ipfix-tls
{{- else -}}
{{- .protocol -}}
{{- end -}}
{{- end }}

{{/* Whether a path is mounted by one of extraVolumeMounts (exactly, or as a parent directory). */}}
{{- define "flow-collector.mountedByExtra" -}}
{{- $path := .path -}}
{{- range .mounts -}}
{{- if or (eq (trimSuffix "/" .mountPath) $path) (hasPrefix (printf "%s/" (trimSuffix "/" .mountPath)) $path) -}}
true
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The collector's config object: .Values.config with the two Secret-backed paths filled in.
Rendered with toPrettyJson into the ConfigMap, and hashed into the pod template so a
config change rolls the pods.
*/}}
{{- define "flow-collector.configObject" -}}
{{- $config := deepCopy .Values.config -}}
{{- if not $config.metrics_addr -}}
{{- fail "config.metrics_addr is required by this chart: the liveness (/healthz) and readiness (/readyz) probes and the metrics Service use its port" -}}
{{- end -}}
{{- $security := $config.security | default dict -}}
{{- if eq (toString $security.mode) "mtls" -}}
{{- $certDir := default "/etc/serviceradar/certs" $security.cert_dir | trimSuffix "/" -}}
{{- $_ := set $security "cert_dir" $certDir -}}
{{- if .Values.tls.existingSecret -}}
{{- range $k, $f := ($security.tls | default dict) -}}
{{- if isAbs (toString $f) -}}
{{- fail (printf "config.security.tls.%s: %q is absolute, but the certificates come from tls.existingSecret mounted at %s: give the key name inside the Secret" $k $f $certDir) -}}
{{- end -}}
{{- end -}}
{{- else if not (include "flow-collector.mountedByExtra" (dict "path" $certDir "mounts" .Values.extraVolumeMounts)) -}}
{{- fail (printf "config.security.mode is \"mtls\": set tls.existingSecret to the Secret holding %s (mounted at %s), or set config.security.mode to \"none\"" (values ($security.tls | default dict) | sortAlpha | join ", ") $certDir) -}}
{{- end -}}
{{- end -}}
{{- if .Values.natsCreds.existingSecret -}}
{{- $_ := set $config "nats_creds_file" (default (printf "/etc/serviceradar/creds/%s" .Values.natsCreds.key) $config.nats_creds_file) -}}
{{- else if $config.nats_creds_file -}}
{{- if not (include "flow-collector.mountedByExtra" (dict "path" $config.nats_creds_file "mounts" .Values.extraVolumeMounts)) -}}
{{- fail (printf "config.nats_creds_file is %s but nothing mounts it: set natsCreds.existingSecret to the Secret holding it" $config.nats_creds_file) -}}
{{- end -}}
{{- end -}}
{{- toJson $config -}}
{{- end }}

{{/* Pod labels: the selector labels, plus app=<name> for the guide's `kubectl -l app=...`. */}}
{{- define "flow-collector.podLabels" -}}
{{ include "flow-collector.labels" . }}
app: {{ include "flow-collector.name" . }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
