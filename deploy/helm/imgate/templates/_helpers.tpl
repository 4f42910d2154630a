{{/* The release's resource name: "imgate" for a release called imgate, else RELEASE-imgate. */}}
{{- define "imgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* What selects the release's pods. */}}
{{- define "imgate.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every object's labels. */}}
{{- define "imgate.labels" -}}
{{ include "imgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: imgate
{{- end -}}

{{/* The pod's variable that holds caller NAME's token_sha256. */}}
{{- define "imgate.callerEnv" -}}
{{- printf "IMGATE_CALLER_%s_TOKEN_SHA256" (. | upper | replace "-" "_" | replace "." "_") -}}
{{- end -}}

{{/* Whether the gateway serves health on a plaintext listener of its own ([health] listen). */}}
{{- define "imgate.healthListener" -}}
{{- if or .Values.tls.enabled .Values.health.separateListener -}}true{{- end -}}
{{- end -}}

{{/* The TOML configuration (the ConfigMap's imgate.toml). Secrets are ${NAME} references. */}}
{{- define "imgate.config" -}}
# Rendered by the imgate chart: change the values, not this text.
listen = "0.0.0.0:{{ .Values.ports.grpc }}"
default_backend = {{ .Values.defaultBackend | toJson }}
{{- if .Values.allowUnauthenticated }}
allow_unauthenticated = true
{{- end }}

[store]
url = "${IMGATE_STORE_URL}"
lease_s = {{ .Values.store.leaseS }}

[quota]
url = "${IMGATE_QUOTA_URL}"

[metrics]
listen = "0.0.0.0:{{ .Values.ports.metrics }}"

[log]
format = {{ .Values.log.format | toJson }}
level = {{ .Values.log.level | toJson }}
{{- if .Values.tls.enabled }}

[tls]
cert_file = "/etc/imgate/tls/tls.crt"
key_file = "/etc/imgate/tls/tls.key"
{{- if .Values.tls.clientCA }}
client_ca_file = "/etc/imgate/tls/ca.crt"
{{- end }}
{{- end }}
{{- if include "imgate.healthListener" . }}

[health]
listen = "0.0.0.0:{{ .Values.health.port }}"
{{- end }}
{{- if .Values.http.enabled }}

[http]
listen = "0.0.0.0:{{ .Values.ports.http }}"
console = {{ .Values.http.console }}
{{- end }}
{{- range $name, $caller := .Values.callers }}

[callers.{{ $name | toJson }}]
token_sha256 = {{ printf "${%s}" (include "imgate.callerEnv" $name) | quote }}
{{- if $caller.backends }}
backends = {{ $caller.backends | toJson }}
{{- end }}
{{- if $caller.weight }}
weight = {{ $caller.weight }}
{{- end }}
{{- end }}
{{- range $name, $backend := .Values.backends }}

[backends.{{ $name | toJson }}]
{{- range $key, $value := $backend }}
{{ $key }} = {{ $value | toJson }}
{{- end }}
{{- end }}
{{- with .Values.extraToml }}

{{ . }}
{{- end }}
{{- end -}}

{{/* The port the probes ask (a number: gRPC probes take no port name). */}}
{{- define "imgate.probePort" -}}
{{- if include "imgate.healthListener" . -}}
{{- .Values.health.port -}}
{{- else -}}
{{- .Values.ports.grpc -}}
{{- end -}}
{{- end -}}
