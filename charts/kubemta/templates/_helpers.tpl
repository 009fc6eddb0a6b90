{{/*
Names, labels and the component table. One image for all components (the four mail stages, the
tracker and webhooks); the Deployment's `command` chooses the service.
*/}}

{{- define "kubemta.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemta.fullname" -}}
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

{{- define "kubemta.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: name, instance (and component, added by kubemta.componentSelectorLabels). */}}
{{- define "kubemta.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubemta.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubemta.labels" -}}
helm.sh/chart: {{ include "kubemta.chart" . }}
{{ include "kubemta.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubemta
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The component table: values key -> component name, console script and the queues it consumes
(each content stage in two lanes: messages over 256 KiB go to `<stage>.large`).
*/}}
{{- define "kubemta.componentTable" -}}
smtpIngress:
  name: smtp-ingress
  command: kubemta-ingress
  queues: []
queueManager:
  name: queue-manager
  command: kubemta-queue-manager
  queues: [inbound, inbound.large, results, results.large]
dnsResolver:
  name: dns-resolver
  command: kubemta-dns-resolver
  queues: [route, route.large]
deliveryWorker:
  name: delivery-worker
  command: kubemta-delivery-worker
  queues: [deliver, deliver.large]
tracker:
  name: tracker
  command: kubemta-tracker
  queues: []
webhooks:
  name: webhooks
  command: kubemta-webhooks
  queues: []
{{- end -}}

{{/* (dict "root" $ "key" "deliveryWorker") -> that component's row of the table */}}
{{- define "kubemta.component" -}}
{{- $table := include "kubemta.componentTable" .root | fromYaml -}}
{{- get $table .key | toYaml -}}
{{- end -}}

{{- define "kubemta.componentFullname" -}}
{{- $c := include "kubemta.component" . | fromYaml -}}
{{- printf "%s-%s" (include "kubemta.fullname" .root) $c.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemta.smtpIngress.fullname" -}}{{ include "kubemta.componentFullname" (dict "root" . "key" "smtpIngress") }}{{- end -}}
{{- define "kubemta.queueManager.fullname" -}}{{ include "kubemta.componentFullname" (dict "root" . "key" "queueManager") }}{{- end -}}
{{- define "kubemta.dnsResolver.fullname" -}}{{ include "kubemta.componentFullname" (dict "root" . "key" "dnsResolver") }}{{- end -}}
{{- define "kubemta.deliveryWorker.fullname" -}}{{ include "kubemta.componentFullname" (dict "root" . "key" "deliveryWorker") }}{{- end -}}
{{- define "kubemta.tracker.fullname" -}}{{ include "kubemta.componentFullname" (dict "root" . "key" "tracker") }}{{- end -}}
{{- define "kubemta.webhooks.fullname" -}}{{ include "kubemta.componentFullname" (dict "root" . "key" "webhooks") }}{{- end -}}

{{- define "kubemta.componentLabels" -}}
{{- $c := include "kubemta.component" . | fromYaml -}}
{{ include "kubemta.labels" .root }}
app.kubernetes.io/component: {{ $c.name }}
{{- end -}}

{{- define "kubemta.componentSelectorLabels" -}}
{{- $c := include "kubemta.component" . | fromYaml -}}
{{ include "kubemta.selectorLabels" .root }}
app.kubernetes.io/component: {{ $c.name }}
{{- end -}}

{{- define "kubemta.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "kubemta.configMapName" -}}{{ include "kubemta.fullname" . }}-config{{- end -}}

{{/* The Secret and key holding KUBEMTA_AMQP_URL (absent when the RabbitmqCluster's default-user Secret is used). */}}
{{- define "kubemta.amqpSecretName" -}}
{{- if .Values.rabbitmq.existingSecret -}}
{{- .Values.rabbitmq.existingSecret -}}
{{- else -}}
{{- include "kubemta.fullname" . }}-amqp
{{- end -}}
{{- end -}}

{{- define "kubemta.rabbitmqClusterName" -}}
{{- default (printf "%s-rabbitmq" (include "kubemta.fullname" .)) .Values.rabbitmq.cluster.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The env entries that give a container KUBEMTA_AMQP_URL. */}}
{{- define "kubemta.amqpEnv" -}}
{{- if .Values.rabbitmq.cluster.create }}
- name: RABBITMQ_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "kubemta.rabbitmqClusterName" . }}-default-user
      key: username
- name: RABBITMQ_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kubemta.rabbitmqClusterName" . }}-default-user
      key: password
- name: KUBEMTA_AMQP_URL
  value: {{ printf "amqp://$(RABBITMQ_USERNAME):$(RABBITMQ_PASSWORD)@%s.%s.svc:5672/%s" (include "kubemta.rabbitmqClusterName" .) .Release.Namespace (.Values.rabbitmq.vhost | urlquery) | quote }}
{{- else }}
- name: KUBEMTA_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "kubemta.amqpSecretName" . }}
      key: {{ .Values.rabbitmq.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* Drain time (plus the ingress' preStop pause) in seconds; the grace period must be longer. */}}
{{- define "kubemta.terminationGracePeriod" -}}
{{- $values := get .root.Values .key -}}
{{- $drain := add (int .root.Values.config.drainSeconds) (int (default 0 $values.preStopSeconds)) -}}
{{- $grace := int (default (add $drain 15) $values.terminationGracePeriodSeconds) -}}
{{- if le $grace $drain -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be longer than config.drainSeconds plus the preStop pause (%d)" .key $grace $drain) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}

{{/* KEDA wins: the HPA is rendered only when the component's ScaledObject is not. */}}
{{- define "kubemta.kedaEnabled" -}}
{{- $values := get .root.Values .key -}}
{{- if and .root.Values.keda.enabled (hasKey $values.autoscaling "keda") -}}
{{- if $values.autoscaling.keda.enabled -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubemta.hpaEnabled" -}}
{{- $values := get .root.Values .key -}}
{{- if and $values.autoscaling.hpa.enabled (not (include "kubemta.kedaEnabled" .)) -}}true{{- end -}}
{{- end -}}

{{/*
ConfigMap entries for a dict of KUBEMTA_* name -> value, skipping the unset ones (null or ""), so the
service's own default applies. Whole numbers are written without an exponent (YAML numbers are floats).
*/}}
{{- define "kubemta.optionalSettings" -}}
{{- range $name, $value := . }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{ $name }}: {{ int64 $value | quote }}
{{- else }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The port of `config.relayhost` (`[host]:port` or `host[:port]`; 25 without one), or nothing. */}}
{{- define "kubemta.relayhostPort" -}}
{{- with .Values.config.relayhost -}}
{{- $port := regexFind ":[0-9]+$" (trim .) -}}
{{- if $port -}}{{ trimPrefix ":" $port }}{{- else -}}25{{- end -}}
{{- end -}}
{{- end -}}
