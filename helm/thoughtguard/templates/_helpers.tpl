{{/* Names and labels. */}}
{{- define "thoughtguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thoughtguard.fullname" -}}
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

{{- define "thoughtguard.vllmName" -}}
{{- printf "%s-vllm" (include "thoughtguard.fullname" . | trunc 58 | trimSuffix "-") -}}
{{- end -}}

{{- define "thoughtguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thoughtguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thoughtguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "thoughtguard.labels" -}}
helm.sh/chart: {{ include "thoughtguard.chart" . }}
{{ include "thoughtguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Topology switches. */}}
{{- define "thoughtguard.runsVllm" -}}
{{- if not .Values.externalUpstream.enabled -}}true{{- end -}}
{{- end -}}

{{- define "thoughtguard.sidecar" -}}
{{- if and (not .Values.externalUpstream.enabled) (eq .Values.topology "sidecar") -}}true{{- end -}}
{{- end -}}

{{- define "thoughtguard.separate" -}}
{{- if and (not .Values.externalUpstream.enabled) (eq .Values.topology "separate") -}}true{{- end -}}
{{- end -}}

{{- define "thoughtguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "thoughtguard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "thoughtguard.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "thoughtguard.vllmImage" -}}
{{- if .Values.vllm.image.digest -}}
{{- printf "%s@%s" .Values.vllm.image.repository .Values.vllm.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.vllm.image.repository .Values.vllm.image.tag -}}
{{- end -}}
{{- end -}}

{{/* The upstream base URL the gateway guards. */}}
{{- define "thoughtguard.upstreamURL" -}}
{{- if .Values.externalUpstream.enabled -}}
{{- required "externalUpstream.url is required when externalUpstream.enabled" .Values.externalUpstream.url -}}
{{- else if eq .Values.topology "separate" -}}
{{- printf "http://%s:%d/v1" (include "thoughtguard.vllmName" .) (int .Values.vllm.port) -}}
{{- else -}}
{{- printf "http://127.0.0.1:%d/v1" (int .Values.vllm.port) -}}
{{- end -}}
{{- end -}}

{{/* The model argument of vLLM: an HF id, or the folder on the mounted claim. */}}
{{- define "thoughtguard.modelArg" -}}
{{- if eq .Values.model.source "pvc" -}}
{{- printf "/models/%s" (.Values.model.pvc.path | trimPrefix "/") | trimSuffix "/" -}}
{{- else -}}
{{- required "model.name is required" .Values.model.name -}}
{{- end -}}
{{- end -}}

{{- define "thoughtguard.servedModelName" -}}
{{- default (include "thoughtguard.modelArg" . | trimSuffix "/" | base) .Values.model.servedModelName -}}
{{- end -}}

{{/* Timing: the gateway drains after its preStop sleep; vLLM outlives it in a shared pod. */}}
{{- define "thoughtguard.vllmPreStopSeconds" -}}
{{- if include "thoughtguard.sidecar" . -}}
{{- add .Values.gateway.preStopSleepSeconds .Values.gateway.drainTimeoutSeconds 5 -}}
{{- else -}}
{{- .Values.gateway.preStopSleepSeconds | int64 -}}
{{- end -}}
{{- end -}}

{{- define "thoughtguard.vllmStartupBudget" -}}
{{- mul .Values.vllm.startupProbe.periodSeconds .Values.vllm.startupProbe.failureThreshold -}}
{{- end -}}

{{- define "thoughtguard.readyTimeout" -}}
{{- if .Values.gateway.readyTimeoutSeconds -}}
{{- .Values.gateway.readyTimeoutSeconds | int64 -}}
{{- else if include "thoughtguard.runsVllm" . -}}
{{- include "thoughtguard.vllmStartupBudget" . -}}
{{- else -}}
600
{{- end -}}
{{- end -}}

{{- define "thoughtguard.gatewayGrace" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds | int64 -}}
{{- else if include "thoughtguard.sidecar" . -}}
{{- add (include "thoughtguard.vllmPreStopSeconds" .) .Values.vllm.shutdownSeconds -}}
{{- else -}}
{{- add .Values.gateway.preStopSleepSeconds .Values.gateway.drainTimeoutSeconds 15 -}}
{{- end -}}
{{- end -}}

{{/* separate topology: vLLM leaves the Service's endpoints, then finishes its requests. */}}
{{- define "thoughtguard.vllmGrace" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds | int64 -}}
{{- else -}}
{{- add (include "thoughtguard.vllmPreStopSeconds" .) .Values.gateway.drainTimeoutSeconds .Values.vllm.shutdownSeconds -}}
{{- end -}}
{{- end -}}

{{- define "thoughtguard.policy" -}}
{{- if .Values.policy.content -}}
{{- .Values.policy.content -}}
{{- else -}}
{{- .Files.Get "files/policy.yaml" -}}
{{- end -}}
{{- end -}}

{{- define "thoughtguard.apiKeySecretName" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{- .Values.apiKeys.existingSecret -}}
{{- else if .Values.apiKeys.create -}}
{{- printf "%s-api-keys" (include "thoughtguard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* GPU resources merged into vLLM's requests and limits. */}}
{{- define "thoughtguard.vllmResources" -}}
{{- $res := deepCopy (default dict .Values.vllm.resources) -}}
{{- $gpu := .Values.vllm.gpu -}}
{{- if lt (int $gpu.count) (int .Values.vllm.tensorParallelSize) -}}
{{- fail (printf "vllm.gpu.count (%d) must be at least vllm.tensorParallelSize (%d)" (int $gpu.count) (int .Values.vllm.tensorParallelSize)) -}}
{{- end -}}
{{- if gt (int $gpu.count) 0 -}}
{{- $requests := default dict $res.requests -}}
{{- $limits := default dict $res.limits -}}
{{- $_ := set $requests $gpu.resourceName (int $gpu.count) -}}
{{- $_ := set $limits $gpu.resourceName (int $gpu.count) -}}
{{- $_ := set $res "requests" $requests -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The pod template's checksum annotations: a policy, settings or key change rolls the pods. */}}
{{- define "thoughtguard.checksums" -}}
checksum/policy: {{ include "thoughtguard.policy" . | sha256sum }}
checksum/settings: {{ toJson .Values.gateway.settings | sha256sum }}
{{- if .Values.apiKeys.create }}
checksum/api-keys: {{ join "," .Values.apiKeys.keys | sha256sum }}
{{- end }}
{{- end -}}

{{/* The gateway container. */}}
{{- define "thoughtguard.gatewayContainer" -}}
- name: gateway
  image: {{ include "thoughtguard.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - --ready-timeout
    - {{ include "thoughtguard.readyTimeout" . | quote }}
  env:
    - name: THOUGHTGUARD_HOST
      value: "0.0.0.0"
    - name: THOUGHTGUARD_PORT
      value: {{ .Values.gateway.port | quote }}
    - name: THOUGHTGUARD_LOG_LEVEL
      value: {{ .Values.gateway.logLevel | quote }}
    - name: THOUGHTGUARD_DRAIN_TIMEOUT_S
      value: {{ .Values.gateway.drainTimeoutSeconds | quote }}
    - name: THOUGHTGUARD_UPSTREAM__URL
      value: {{ include "thoughtguard.upstreamURL" . | quote }}
    - name: THOUGHTGUARD_UPSTREAM__CONNECT_TIMEOUT_S
      value: {{ .Values.gateway.upstream.connectTimeoutSeconds | quote }}
    - name: THOUGHTGUARD_UPSTREAM__READ_TIMEOUT_S
      value: {{ .Values.gateway.upstream.readTimeoutSeconds | quote }}
    - name: THOUGHTGUARD_UPSTREAM__MAX_CONNECTIONS
      value: {{ .Values.gateway.upstream.maxConnections | quote }}
    - name: THOUGHTGUARD_UPSTREAM__IMPLICIT_THINK
      value: {{ .Values.gateway.upstream.implicitThink | quote }}
    - name: THOUGHTGUARD_GUARD__POLICY_FILE
      value: /etc/thoughtguard/policy.yaml
    {{- with .Values.gateway.mode }}
    - name: THOUGHTGUARD_GUARD__MODE
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.gateway.detector }}
    - name: THOUGHTGUARD_GUARD__DETECTOR
      value: {{ . | quote }}
    {{- end }}
    - name: THOUGHTGUARD_GUARD__DEVICE
      value: {{ .Values.gateway.readerDevice | quote }}
    - name: THOUGHTGUARD_GUARD__READER_THREADS
      value: {{ .Values.gateway.readerThreads | quote }}
    - name: THOUGHTGUARD_GUARD__MAX_BATCH
      value: {{ .Values.gateway.readerMaxBatch | quote }}
    - name: THOUGHTGUARD_WORKERS
      value: {{ .Values.gateway.workers | quote }}
    {{- if .Values.gateway.metricsPort }}
    - name: THOUGHTGUARD_METRICS_PORT
      value: {{ .Values.gateway.metricsPort | quote }}
    {{- end }}
    {{- if .Values.gateway.settings }}
    - name: THOUGHTGUARD_CONFIG
      value: /etc/thoughtguard/config.yaml
    {{- end }}
    {{- with (include "thoughtguard.apiKeySecretName" .) }}
    - name: THOUGHTGUARD_AUTH__API_KEYS
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: {{ $.Values.apiKeys.key }}
    {{- end }}
    {{- if and .Values.externalUpstream.enabled .Values.externalUpstream.apiKeySecret.name }}
    - name: THOUGHTGUARD_UPSTREAM__API_KEY
      valueFrom:
        secretKeyRef:
          name: {{ .Values.externalUpstream.apiKeySecret.name }}
          key: {{ .Values.externalUpstream.apiKeySecret.key }}
    {{- end }}
    {{- with .Values.gateway.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ .Values.gateway.port }}
      protocol: TCP
    {{- if .Values.gateway.metricsPort }}
    - name: metrics
      containerPort: {{ .Values.gateway.metricsPort }}
      protocol: TCP
    {{- end }}
  startupProbe:
    httpGet:
      path: /health
      port: http
    {{- toYaml .Values.gateway.startupProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /health
      port: http
    {{- toYaml .Values.gateway.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /ready
      port: http
    {{- toYaml .Values.gateway.readinessProbe | nindent 4 }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ .Values.gateway.preStopSleepSeconds }}
  resources:
    {{- toYaml .Values.gateway.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.gateway.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: config
      mountPath: /etc/thoughtguard
      readOnly: true
{{- end -}}

{{/* The vLLM container. */}}
{{- define "thoughtguard.vllmContainer" -}}
- name: vllm
  image: {{ include "thoughtguard.vllmImage" . }}
  imagePullPolicy: {{ .Values.vllm.image.pullPolicy }}
  command: ["python3", "-m", "vllm.entrypoints.openai.api_server"]
  args:
    - --model
    - {{ include "thoughtguard.modelArg" . | quote }}
    - --served-model-name
    - {{ include "thoughtguard.servedModelName" . | quote }}
    - --host
    - "0.0.0.0"
    - --port
    - {{ .Values.vllm.port | quote }}
    - --max-model-len
    - {{ .Values.vllm.maxModelLen | quote }}
    - --tensor-parallel-size
    - {{ .Values.vllm.tensorParallelSize | quote }}
    - --gpu-memory-utilization
    - {{ .Values.vllm.gpuMemoryUtilization | quote }}
    {{- with .Values.vllm.reasoningParser }}
    - --reasoning-parser
    - {{ . | quote }}
    {{- end }}
    {{- range .Values.vllm.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: HOME
      value: /tmp
    - name: USER
      value: thoughtguard
    - name: XDG_CACHE_HOME
      value: /tmp/.cache
    - name: VLLM_CACHE_ROOT
      value: /tmp/vllm
    - name: VLLM_NO_USAGE_STATS
      value: "1"
    - name: DO_NOT_TRACK
      value: "1"
    {{- if eq .Values.model.source "pvc" }}
    - name: HF_HOME
      value: /tmp/huggingface
    - name: HF_HUB_OFFLINE
      value: "1"
    {{- else }}
    - name: HF_HOME
      value: /models/huggingface
    - name: HF_HUB_OFFLINE
      value: "0"
    {{- end }}
    {{- if .Values.model.hfTokenSecret.name }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ .Values.model.hfTokenSecret.name }}
          key: {{ .Values.model.hfTokenSecret.key }}
    {{- end }}
    {{- with .Values.vllm.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: vllm-http
      containerPort: {{ .Values.vllm.port }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /health
      port: vllm-http
    {{- toYaml .Values.vllm.startupProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /health
      port: vllm-http
    {{- toYaml .Values.vllm.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /health
      port: vllm-http
    {{- toYaml .Values.vllm.readinessProbe | nindent 4 }}
  lifecycle:
    preStop:
      # sidecar: keep serving until the gateway beside it has drained its streams;
      # separate: leave the Service's endpoints before vLLM stops accepting.
      sleep:
        seconds: {{ include "thoughtguard.vllmPreStopSeconds" . }}
  resources:
    {{- include "thoughtguard.vllmResources" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.vllm.securityContext | nindent 4 }}
  volumeMounts:
    - name: vllm-tmp
      mountPath: /tmp
    - name: dshm
      mountPath: /dev/shm
    - name: model
      mountPath: /models
      {{- if eq .Values.model.source "pvc" }}
      readOnly: true
      {{- end }}
{{- end -}}

{{- define "thoughtguard.vllmVolumes" -}}
- name: vllm-tmp
  emptyDir:
    sizeLimit: {{ .Values.vllm.tmpSizeLimit }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.vllm.shmSizeLimit }}
{{- if eq .Values.model.source "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ required "model.pvc.claimName is required when model.source=pvc" .Values.model.pvc.claimName }}
    readOnly: true
{{- else if .Values.model.cache.existingClaim }}
- name: model
  persistentVolumeClaim:
    claimName: {{ .Values.model.cache.existingClaim }}
{{- else }}
- name: model
  emptyDir:
    sizeLimit: {{ .Values.model.cache.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "thoughtguard.gatewayVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.gateway.tmpSizeLimit }}
- name: config
  configMap:
    name: {{ include "thoughtguard.fullname" . }}
{{- end -}}
