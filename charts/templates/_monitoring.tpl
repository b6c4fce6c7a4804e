{{/* Config files of the bundled Prometheus and Grafana (metrics.bundled), as named templates so
     the Deployments can carry their checksum (a change rolls the pod). */}}

{{/* prometheus.yml: this release's pods in this namespace, each container port named "metrics". */}}
{{- define "sf.prometheusConfig" -}}
{{- $v := .Values.metrics.bundled.prometheus -}}
global:
  scrape_interval: {{ $v.scrapeInterval }}
  evaluation_interval: {{ $v.scrapeInterval }}
scrape_configs:
  - job_name: skillfactory
    kubernetes_sd_configs:
      - role: pod
        namespaces:
          names: [{{ .Release.Namespace | quote }}]
        selectors:
          - role: pod
            label: "app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/part-of=skillfactory"
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: metrics
        action: keep
      {{- if include "sf.learnerMulti" . }}
      # Of a multi-process learner only pod 0 (rank 0) serves metrics.
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component, __meta_kubernetes_pod_name]
        regex: learner;.*-[1-9][0-9]*
        action: drop
      {{- end }}
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
        target_label: component
{{- end }}

{{/* Grafana datasource provisioning: the bundled Prometheus, as the default datasource (the
     dashboards' `datasource` variable picks it). */}}
{{- define "sf.grafanaDatasources" -}}
apiVersion: 1
datasources:
  - name: Prometheus
    uid: skillfactory-prometheus
    type: prometheus
    access: proxy
    url: http://{{ include "sf.fullname" . }}-prometheus:9090
    isDefault: true
    editable: false
{{- end }}

{{/* Grafana dashboard provisioning: the dashboard ConfigMaps, mounted in one folder. */}}
{{- define "sf.grafanaDashboardProviders" -}}
apiVersion: 1
providers:
  - name: skillfactory
    folder: SkillFactory
    type: file
    disableDeletion: true
    allowUiUpdates: false
    options:
      path: /var/lib/grafana-dashboards
{{- end }}
