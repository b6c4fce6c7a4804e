{{/* Chart name. */}}
{{- define "sf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "sf.fullname" -}}
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

{{/* Labels shared by every object. */}}
{{- define "sf.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: skillfactory
{{- end }}

{{/* Selector labels of one component: include "sf.selector" (list $ "learner"). */}}
{{- define "sf.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "sf.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Labels of one component's objects. */}}
{{- define "sf.componentLabels" -}}
{{ include "sf.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "sf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sf.image" -}}
{{- $ := index . 0 -}}
{{- $img := index . 1 -}}
{{- printf "%s:%s" $img.repository (default $.Chart.AppVersion $img.tag) }}
{{- end }}

{{/* Secret names and keys. */}}
{{- define "sf.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "sf.fullname" .)) .Values.auth.existingSecret }}
{{- end }}
{{- define "sf.redisSecret" -}}
{{- default (printf "%s-redis" (include "sf.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}
{{/* The Redis password is always on (a generated Secret, or redis.auth.existingSecret), for the
     chart's Redis and an external one alike. */}}
{{- define "sf.redisPasswordEnabled" -}}
true
{{- end }}

{{/* Redis URL handed to the services (no password: it comes from SKILLFACTORY_REDIS_PASSWORD). */}}
{{- define "sf.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s-redis:%v/0" (include "sf.fullname" .) .Values.redis.port }}
{{- else }}
{{- required "redis.external.url is required when redis.enabled is false" .Values.redis.external.url }}
{{- end }}
{{- end }}

{{/* Pod annotations for Prometheus scraping: include "sf.scrapeAnnotations" (list $ port). */}}
{{- define "sf.scrapeAnnotations" -}}
{{- $ := index . 0 -}}
{{- if $.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Env of the learner and the rollouts: the Redis password (`--redis-url` carries none; the
     services read it from SKILLFACTORY_REDIS_PASSWORD). */}}
{{- define "sf.redisEnv" -}}
{{- if include "sf.redisPasswordEnabled" . }}
- name: SKILLFACTORY_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "sf.redisSecret" . }}
      key: {{ .Values.redis.auth.existingSecretKey }}
{{- end }}
{{- end }}

{{/* True when ServiceMonitors are rendered. */}}
{{- define "sf.serviceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (or .Values.metrics.serviceMonitor.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) }}true{{ end }}
{{- end }}

{{/* Name of the ConfigMap holding one dashboard: include "sf.dashboardConfigMap" (list $ path). */}}
{{- define "sf.dashboardConfigMap" -}}
{{- printf "%s-dashboard-%s" (include "sf.fullname" (index . 0)) (base (index . 1) | trimSuffix ".json") }}
{{- end }}

{{/* Labels of the bundled Prometheus and Grafana objects. part-of differs from the services'
     (skillfactory) on purpose: the NetworkPolicies that admit "the chart's pods" to Redis and the
     gRPC ports do not admit these; Prometheus gets its own rule for the metrics ports. */}}
{{- define "sf.monitoringLabels" -}}
{{- $ := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $.Chart.Name $.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skillfactory-monitoring
{{ include "sf.selector" . }}
{{- end }}

{{/* Name of the Grafana admin Secret. */}}
{{- define "sf.grafanaSecret" -}}
{{- default (printf "%s-grafana" (include "sf.fullname" .)) .Values.metrics.bundled.grafana.admin.existingSecret }}
{{- end }}

{{/* The shared data/weights volume: the chart's RWX claim, or shared.existingClaim. */}}
{{- define "sf.sharedClaim" -}}
{{- default (printf "%s-shared" (include "sf.fullname" .)) .Values.shared.existingClaim }}
{{- end }}

{{/* Where the learner publishes weight stores (<dir>/<run>/<epoch>/v<version>) on the share. */}}
{{- define "sf.weightsDir" -}}
{{- printf "%s/weights" (.Values.shared.mountPath | trimSuffix "/") }}
{{- end }}

{{/* In-cluster HOST:PORT of one component's gRPC Service: include "sf.address" (list $ "reward"). */}}
{{- define "sf.address" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- printf "%s-%s:%v" (include "sf.fullname" $) $component (index $.Values $component).port }}
{{- end }}

{{/* The shared claim's volume (learner, composer, rollouts). */}}
{{- define "sf.sharedVolume" -}}
- name: shared
  persistentVolumeClaim:
    claimName: {{ include "sf.sharedClaim" . }}
{{- end }}

{{/* Tokens (docs/security.md): one Secret (sf.tokensSecret) holds a token per role; each service
     mounts only the tokens it accepts (`--tokens-dir`) and, when it calls another service, the
     one it sends (`--client-token-file`):
       learner:  accepts admin, submitter (+ auth.submitters); sends learner (to the composer)
       rollout:  accepts learner;                              sends rollout (to the reward service)
       reward:   accepts rollout;                              sends nothing
       composer: accepts learner;                              sends nothing
     So no pod but the learner holds a token that may submit or cancel runs. */}}
{{- define "sf.tokenKeys" -}}
{{- concat (list "admin" "submitter" "learner" "rollout") .Values.auth.submitters | toJson }}
{{- end }}
{{- define "sf.acceptedTokens" -}}
{{- $ := index . 0 -}}
{{- $accepts := dict "learner" (concat (list "admin" "submitter") $.Values.auth.submitters) "rollout" (list "learner") "reward" (list "rollout") "composer" (list "learner") -}}
{{- index $accepts (index . 1) | toJson }}
{{- end }}
{{- define "sf.clientToken" -}}
{{- index (dict "learner" "learner" "rollout" "rollout") (index . 1) | default "" }}
{{- end }}
{{- define "sf.tlsSecret" -}}
{{- printf "%s-%s-tls" (include "sf.fullname" (index . 0)) (index . 1) }}
{{- end }}

{{/* Volumes, mounts and options of a service's tokens and TLS:
     include "sf.authVolumes" (list $ "reward"), likewise sf.authMounts and sf.authArgs. */}}
{{- define "sf.authVolumes" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
- name: tokens
  secret:
    secretName: {{ include "sf.tokensSecret" $ }}
    defaultMode: 0440
    items:
      {{- range include "sf.acceptedTokens" . | fromJsonArray }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- with include "sf.clientToken" . }}
- name: client-token
  secret:
    secretName: {{ include "sf.tokensSecret" $ }}
    defaultMode: 0440
    items:
      - key: {{ . }}
        path: token
{{- end }}
{{- if $.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "sf.tlsSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- define "sf.authMounts" -}}
{{- $ := index . 0 -}}
- name: tokens
  mountPath: /var/run/skillfactory/tokens
  readOnly: true
{{- if include "sf.clientToken" . }}
- name: client-token
  mountPath: /var/run/skillfactory/client
  readOnly: true
{{- end }}
{{- if $.Values.tls.enabled }}
- name: tls
  mountPath: /var/run/skillfactory/tls
  readOnly: true
{{- end }}
{{- end }}
{{/* Server options every service gets: metrics on every interface of the pod (Prometheus scrapes
     the pod IP; port-forward reaches 127.0.0.1), gRPC health in plaintext on the health port (the
     kubelet's probes speak no TLS), the accepted tokens, the token it sends, TLS. */}}
{{- define "sf.serverArgs" -}}
{{- $ := index . 0 -}}
{{- $v := index $.Values (index . 1) -}}
- --host=0.0.0.0
- --port={{ $v.port }}
- --metrics-host=0.0.0.0
- --metrics-port={{ $v.metricsPort }}
- --health-port={{ $v.healthPort }}
- --tokens-dir=/var/run/skillfactory/tokens
{{- if include "sf.clientToken" . }}
- --client-token-file=/var/run/skillfactory/client/token
{{- end }}
{{- if $.Values.tls.enabled }}
- --tls-cert=/var/run/skillfactory/tls/tls.crt
- --tls-key=/var/run/skillfactory/tls/tls.key
{{- if include "sf.clientToken" . }}
- --tls-ca=/var/run/skillfactory/tls/ca.crt
{{- end }}
{{- end }}
{{- end }}
{{/* The gRPC health probes of a service, on its plaintext health port. */}}
{{- define "sf.healthProbe" -}}
grpc:
  port: {{ . }}
{{- end }}

{{/* Queue options the learner and the rollout samplers must agree on. */}}
{{- define "sf.queueArgs" -}}
- --redis-url={{ include "sf.redisUrl" . }}
- --claim-idle-ms={{ .Values.queue.claimIdleMs }}
- --stream-prefix={{ .Values.queue.streamPrefix }}
{{- end }}

{{/* Multi-process learner (learner.nodes × learner.procsPerNode > 1): every pod runs torchrun. */}}
{{- define "sf.learnerMulti" -}}
{{- if gt (mul (int .Values.learner.nodes) (int .Values.learner.procsPerNode)) 1 }}true{{ end }}
{{- end }}

{{/* Pod 0's stable DNS name through the headless Service (published before it is ready):
     torchrun's master address, where node 0's rendezvous store listens. */}}
{{- define "sf.learnerMaster" -}}
{{- $fullname := include "sf.fullname" . -}}
{{- printf "%s-learner-0.%s-learner-headless.%s.svc" $fullname $fullname .Release.Namespace }}
{{- end }}

{{/* The learner container's shell wrapper under torchrun (`sh -c SCRIPT torchrun ARGS...`): the
     node rank is the pod's ordinal, parsed from its name (POD_NAME, downward API), which every
     Kubernetes version gives StatefulSet pods (the apps.kubernetes.io/pod-index label needs
     1.28+ and the PodIndexLabel gate, beta until 1.32). The CLI arguments follow as "$@". */}}
{{- define "sf.learnerTorchrun" -}}
{{- $v := .Values.learner -}}
rank="${POD_NAME##*-}"
case "$rank" in
  ''|*[!0-9]*) echo "no StatefulSet ordinal in POD_NAME=$POD_NAME" >&2; exit 1 ;;
esac
exec python -m torch.distributed.run --nnodes={{ $v.nodes }} --nproc-per-node={{ $v.procsPerNode }} \
  --node-rank="$rank" --master-addr={{ include "sf.learnerMaster" . }} \
  --master-port={{ $v.rendezvousPort }} -m skillfactory.cli "$@"
{{- end }}

{{/* Probe of a multi-process learner pod: on pod 0 (rank 0 serves) gRPC health as the kubelet's
     grpc probe would ask it; on the other pods, whose ranks serve nothing, success (a rank that
     dies ends torchrun, hence the container). */}}
{{- define "sf.learnerProbe" -}}
case "${POD_NAME##*-}" in
  0) exec python -c "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; sys.exit(g.HealthStub(grpc.insecure_channel('127.0.0.1:{{ .Values.learner.healthPort }}')).Check(h.HealthCheckRequest(), timeout=8).status != h.HealthCheckResponse.SERVING)" ;;
  *) exit 0 ;;
esac
{{- end }}
{{- define "sf.learnerProbeExec" -}}
exec:
  command:
    - /bin/sh
    - -c
    - |
      {{- include "sf.learnerProbe" . | nindent 6 }}
{{- end }}

{{/* True when the rollout's RayService is rendered: rollout.ray.enabled and the KubeRay operator's
     ray.io/v1 RayService API exists in the cluster, or rollout.ray.force. Enabled without the API
     and without force fails rendering rather than dropping the RayService silently. */}}
{{- define "sf.rayService" -}}
{{- if .Values.rollout.ray.enabled }}
{{- if or .Values.rollout.ray.force (.Capabilities.APIVersions.Has "ray.io/v1/RayService") }}true
{{- else }}
{{- fail "rollout.ray.enabled is true but the cluster has no ray.io/v1/RayService API: install the KubeRay operator first, or set rollout.ray.force=true to render it anyway (helm template: --api-versions ray.io/v1/RayService)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Ray's own ports on the Ray pods (KubeRay's defaults): GCS, dashboard (the operator deploys
     serveConfigV2 through it), Ray client, metrics export, dashboard agent. */}}
{{- define "sf.rayPorts" -}}
{{- dict "gcs" 6379 "dashboard" 8265 "client" 10001 "metrics" 8080 "agent" 52365 | toJson }}
{{- end }}

{{/* Env of the Ray pods: the learner role's token as SKILLFACTORY_TOKEN (what ray_rollout's
     replicas accept, read without a token_file), writable homes and caches under /tmp,
     rollout.extraEnv. */}}
{{- define "sf.rayEnv" -}}
env:
  - name: HOME
    value: /tmp
  - name: HF_HOME
    value: /tmp/hf-cache
  - name: SKILLFACTORY_CACHE
    value: /tmp/skillfactory-cache
  - name: SKILLFACTORY_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ include "sf.tokensSecret" . }}
        key: learner
  {{- with .Values.rollout.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Mounts and volumes of the Ray pods: /tmp (Ray's session files and logs) and the shared
     volume, read-only at shared.mountPath as in the rollout Deployment (weight notices name
     folders there). KubeRay adds /dev/shm itself. */}}
{{- define "sf.rayMounts" -}}
- name: tmp
  mountPath: /tmp
- name: shared
  mountPath: {{ .Values.shared.mountPath }}
  readOnly: true
{{- end }}
{{- define "sf.rayVolumes" -}}
{{ include "sf.sharedVolume" . }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.rollout.tmpSizeLimit }}
{{- end }}

{{/* How rollouts scale (rollout.autoscaling.mode): keda where its API exists (auto) or when
     asked, else the learner's own scaler. */}}
{{- define "sf.autoscalingMode" -}}
{{- $mode := .Values.rollout.autoscaling.mode }}
{{- if eq $mode "auto" }}
{{- if .Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject" }}keda{{ else }}learner{{ end }}
{{- else }}{{ $mode }}{{ end }}
{{- end }}

{{/* True when the learner runs the rollout scaler (it then needs its scaler ServiceAccount). */}}
{{- define "sf.learnerScales" -}}
{{- if and .Values.rollout.autoscaling.enabled (eq (include "sf.autoscalingMode" .) "learner") }}true{{ end }}
{{- end }}

{{/* Redis host:port (KEDA's redis-streams trigger wants an address, not a URL). */}}
{{- define "sf.redisAddress" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s-redis.%s.svc:%v" (include "sf.fullname" .) .Release.Namespace .Values.redis.port }}
{{- else }}
{{- $url := urlParse (include "sf.redisUrl" .) }}
{{- $url.host }}
{{- end }}
{{- end }}

{{/* The learner's run limits (learner.limits, skillfactory.run_limits): a spec over one is refused
     at submit time naming the field; 0 sets none. */}}
{{- define "sf.limitArgs" -}}
{{- $l := .Values.learner.limits -}}
{{- $options := dict "maxSteps" "max-steps" "maxProblems" "max-problems" "maxTokens" "max-tokens" "maxSamples" "max-samples" "maxEpochs" "max-epochs" "maxSpecBytes" "max-spec-bytes" -}}
{{- range $key := list "maxSteps" "maxProblems" "maxTokens" "maxSamples" "maxEpochs" "maxSpecBytes" }}
{{- $value := index $l $key }}
{{- if $value }}
- --{{ index $options $key }}={{ if eq $key "maxEpochs" }}{{ $value }}{{ else }}{{ int64 $value }}{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* A service's gRPC, metrics and health ports must differ: include "sf.checkPorts" (list $ "reward"). */}}
{{- define "sf.checkPorts" -}}
{{- $component := index . 1 -}}
{{- $v := index (index . 0).Values $component -}}
{{- if ne (len (uniq (list (int $v.port) (int $v.metricsPort) (int $v.healthPort)))) 3 }}
{{- fail (printf "%s.port, %s.metricsPort and %s.healthPort must differ" $component $component $component) }}
{{- end }}
{{- end }}
