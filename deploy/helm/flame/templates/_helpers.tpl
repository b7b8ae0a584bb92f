{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "flame.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-flame, or the release name when it already contains the chart name; 40 characters
at most so that "<fullname>-<component>-<suffix>" stays a valid name. */}}
{{- define "flame.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a component's objects: (dict "ctx" $ "component" "apiserver") */}}
{{- define "flame.componentName" -}}
{{- printf "%s-%s" (include "flame.fullname" .ctx) .component }}
{{- end }}

{{/* In-cluster DNS name of a component's Service. */}}
{{- define "flame.host" -}}
{{- printf "%s-%s.%s.svc" (include "flame.fullname" .ctx) .component .ctx.Release.Namespace }}
{{- end }}

{{/* Labels ---------------------------------------------------------------------------- */}}

{{- define "flame.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flame.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "flame.labels" -}}
{{ include "flame.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: flame
{{- end }}

{{/* Labels the Kubernetes deployer puts on every task pod (the NetworkPolicies select them). */}}
{{- define "flame.taskLabels" -}}
{{- dict "app.kubernetes.io/name" (include "flame.name" .) "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/component" "task" | toJson }}
{{- end }}

{{/* Images ---------------------------------------------------------------------------- */}}

{{/* (dict "ctx" $ "image" .Values.apiserver.image): Flame images take the global registry and
tag; third-party images (repository with a host) are used as given. */}}
{{- define "flame.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion }}
{{- if and .ctx.Values.image.registry (hasPrefix "flame/" .image.repository) }}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "flame.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Security ---------------------------------------------------------------------------- */}}

{{/* (dict "uid" 10001 "gid" 10001 "fsGroup" 10001) */}}
{{- define "flame.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .gid }}
  fsGroup: {{ .fsGroup }}
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "flame.flamePodSecurityContext" -}}
{{ include "flame.podSecurityContext" (dict "uid" .Values.podSecurity.runAsUser "gid" .Values.podSecurity.runAsGroup "fsGroup" .Values.podSecurity.fsGroup) }}
{{- end }}

{{- define "flame.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* Addresses ------------------------------------------------------------------------- */}}

{{- define "flame.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "flame.apiserverInClusterUrl" -}}
{{- printf "%s://%s:%v" (include "flame.scheme" .) (include "flame.host" (dict "ctx" . "component" "apiserver")) .Values.apiserver.service.port }}
{{- end }}

{{- define "flame.apiserverUrl" -}}
{{- .Values.apiserver.publicUrl | default (include "flame.apiserverInClusterUrl" .) }}
{{- end }}

{{- define "flame.controllerAddress" -}}
{{- printf "%s:%v" (include "flame.host" (dict "ctx" . "component" "controller")) .Values.controller.port }}
{{- end }}

{{- define "flame.notifierInClusterAddress" -}}
{{- printf "%s:%v" (include "flame.host" (dict "ctx" . "component" "notifier")) .Values.notifier.service.port }}
{{- end }}

{{- define "flame.mlflowUrl" -}}
{{- printf "http://%s:%v" (include "flame.host" (dict "ctx" . "component" "mlflow")) .Values.mlflow.port }}
{{- end }}

{{- define "flame.mqttPort" -}}
{{- if .Values.tls.enabled }}8883{{ else }}1883{{ end }}
{{- end }}

{{/* Secrets --------------------------------------------------------------------------- */}}

{{/* A generated secret value, base64-encoded, kept across upgrades:
(dict "ctx" $ "secret" "<name>" "key" "<key>" "length" 32 "prefix" "") */}}
{{- define "flame.generatedValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- printf "%s%s" (.prefix | default "") (randAlphaNum (int .length)) | b64enc }}
{{- end }}
{{- end }}

{{- define "flame.credentialsSecret" -}}
{{- .Values.credentials.existingSecret | default (include "flame.componentName" (dict "ctx" . "component" "credentials")) }}
{{- end }}

{{- define "flame.mongodbSecret" -}}
{{- .Values.mongodb.existingSecret | default (include "flame.componentName" (dict "ctx" . "component" "mongodb")) }}
{{- end }}

{{- define "flame.postgresqlSecret" -}}
{{- .Values.mlflow.backend.postgresql.existingSecret | default (include "flame.componentName" (dict "ctx" . "component" "postgresql")) }}
{{- end }}

{{/* The controller's store URI. The bundled MongoDB's is assembled by Kubernetes' $(VAR)
expansion from the password Secret, so no Secret holds a copy of the password; an external one
comes whole from your Secret. */}}
{{- define "flame.storeUriEnv" -}}
{{- if .Values.mongodb.enabled }}
- name: MONGODB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "flame.mongodbSecret" . }}
      key: password
- name: FLAME_CONTROLLER_STORE_URI
  value: {{ printf "mongodb://%s:$(MONGODB_PASSWORD)@%s:27017/%s?authSource=%s" .Values.mongodb.username (include "flame.host" (dict "ctx" . "component" "mongodb")) .Values.mongodb.database .Values.mongodb.database | quote }}
{{- else }}
- name: FLAME_CONTROLLER_STORE_URI
  valueFrom:
    secretKeyRef:
      name: {{ required "mongodb.external.uriSecret.name is required when mongodb.enabled=false" .Values.mongodb.external.uriSecret.name }}
      key: {{ .Values.mongodb.external.uriSecret.key }}
{{- end }}
{{- end }}

{{/* MLflow's backend store URI, the same way. */}}
{{- define "flame.mlflowDbUriEnv" -}}
{{- $pg := .Values.mlflow.backend.postgresql }}
{{- if $pg.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "flame.postgresqlSecret" . }}
      key: password
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" $pg.username (include "flame.host" (dict "ctx" . "component" "postgresql")) $pg.database | quote }}
{{- else }}
- name: MLFLOW_BACKEND_STORE_URI
  valueFrom:
    secretKeyRef:
      name: {{ required "mlflow.backend.external.uriSecret.name is required when mlflow.backend.postgresql.enabled=false" .Values.mlflow.backend.external.uriSecret.name }}
      key: {{ .Values.mlflow.backend.external.uriSecret.key }}
{{- end }}
{{- end }}

{{/* TLS ----------------------------------------------------------------------------------- */}}

{{- define "flame.tlsSecret" -}}
{{- $own := index .ctx.Values.tls.existingSecrets .component }}
{{- $own | default (printf "%s-tls" (include "flame.componentName" .)) }}
{{- end }}

{{/* TLS env and volume mount of a Flame service: (dict "ctx" $ "service" "CONTROLLER") */}}
{{- define "flame.tlsEnv" -}}
{{- if .ctx.Values.tls.enabled }}
- name: FLAME_{{ .service }}_TLS_CA
  value: /etc/flame/tls/ca.crt
- name: FLAME_{{ .service }}_TLS_CERT
  value: /etc/flame/tls/tls.crt
- name: FLAME_{{ .service }}_TLS_KEY
  value: /etc/flame/tls/tls.key
{{- end }}
{{- end }}

{{/* Volumes every Flame service has: /tmp, the service token and (with TLS) its certificate. */}}
{{- define "flame.serviceVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: service-token
  secret:
    secretName: {{ include "flame.credentialsSecret" .ctx }}
    defaultMode: 0440
    items:
      - key: service-token
        path: token
{{- if .ctx.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "flame.tlsSecret" . }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}

{{- define "flame.serviceVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: service-token
  mountPath: /etc/flame/service
  readOnly: true
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/flame/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Prometheus /metrics (metrics.enabled): the token volume, its mount, the env of one
service (ctx, service: CONTROLLER|NOTIFIER|APISERVER, port: its own metrics port or none for
the apiserver, which serves /metrics on its API port) and the scrape annotations. */}}
{{- define "flame.metricsVolume" -}}
{{- if .Values.metrics.enabled }}
- name: metrics-token
  secret:
    secretName: {{ include "flame.credentialsSecret" . }}
    defaultMode: 0440
    items:
      - key: metrics-token
        path: token
{{- end }}
{{- end }}

{{- define "flame.metricsVolumeMount" -}}
{{- if .Values.metrics.enabled }}
- name: metrics-token
  mountPath: /etc/flame/metrics
  readOnly: true
{{- end }}
{{- end }}

{{- define "flame.metricsEnv" -}}
{{- if .ctx.Values.metrics.enabled }}
{{- if .port }}
- name: FLAME_{{ .service }}_METRICS_PORT
  value: {{ .port | quote }}
- name: FLAME_{{ .service }}_METRICS_HOST
  value: "0.0.0.0"
{{- end }}
- name: FLAME_{{ .service }}_METRICS_TOKEN_FILE
  value: /etc/flame/metrics/token
{{- end }}
{{- end }}

{{- define "flame.metricsAnnotations" -}}
{{- if and .ctx.Values.metrics.enabled .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
prometheus.io/scheme: {{ .scheme | default "http" }}
{{- end }}
{{- end }}

{{- define "flame.serviceTokenEnv" -}}
- name: FLAME_SERVICE_TOKEN_FILE
  value: /etc/flame/service/token
{{- end }}

{{/* NetworkPolicy pieces ------------------------------------------------------------ */}}

{{/* A peer: the pods of one component of this release. */}}
{{- define "flame.np.peer" -}}
- podSelector:
    matchLabels:
      {{- include "flame.selectorLabels" . | nindent 6 }}
{{- end }}
{{/* Ingress to a metrics port (metrics.enabled), from metrics.allowFrom or anyone. */}}
{{- define "flame.np.metrics" -}}
{{- if .ctx.Values.metrics.enabled }}
- ports:
    - {protocol: TCP, port: {{ .port }}}
  {{- with .ctx.Values.metrics.allowFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- define "flame.np.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .namespaceSelector | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .podSelector | nindent 10 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}

{{/* Scheduling ---------------------------------------------------------------------------- */}}
{{- define "flame.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Checks that no schema can express ------------------------------------------------------ */}}
{{- define "flame.validate" -}}
{{- $c := .Values.controller }}
{{- if and (gt (int $c.replicas) 1) (not $c.leaderElection.enabled) }}
{{- fail "controller.replicas > 1 needs controller.leaderElection.enabled=true (the controller is the single writer)" }}
{{- end }}
{{- if and (gt (int $c.replicas) 1) $c.persistence.enabled (not $c.persistence.existingClaim) (not (has "ReadWriteMany" $c.persistence.accessModes)) }}
{{- fail "controller.replicas > 1 shares one data volume: set controller.persistence.accessModes to [ReadWriteMany] (or an existingClaim that is)" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.mlflow.enabled (eq .Values.mlflow.artifacts.type "s3") (not .Values.mlflow.artifacts.s3.bucket) }}
{{- fail "mlflow.artifacts.type=s3 needs mlflow.artifacts.s3.bucket" }}
{{- end }}
{{- $own := .Values.tls.existingSecrets }}
{{- if and .Values.tls.enabled (or $own.apiserver $own.controller $own.notifier $own.mqtt) }}
{{- if not (and $own.apiserver $own.controller $own.notifier (or $own.mqtt (not .Values.mqtt.enabled))) }}
{{- fail "tls.existingSecrets: name a Secret for every component (apiserver, controller, notifier, and mqtt when mqtt.enabled), or none" }}
{{- end }}
{{- end }}
{{- if and .Values.flamelet.enabled (not .Values.flamelet.enrolmentSecret) }}
{{- fail "flamelet.enabled needs flamelet.enrolmentSecret (keys token-0, token-1, ...: one enrolment token per replica from `flamectl node create`)" }}
{{- end }}
{{- end }}
