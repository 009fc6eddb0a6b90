{{/*
The resources every component has, each called as
  include "kubemta.<resource>" (dict "root" $ "key" "<valuesKey>")
so the components stay identical where they should.
*/}}

{{- define "kubemta.deployment" -}}
{{- $root := .root -}}
{{- $v := get $root.Values .key -}}
{{- $c := include "kubemta.component" . | fromYaml -}}
{{- $isIngress := eq .key "smtpIngress" -}}
{{- $isWorker := eq .key "deliveryWorker" -}}
{{- $relayAuth := and $isWorker $root.Values.relayhost.existingSecret -}}
{{- if and $relayAuth (not $root.Values.config.relayhost) -}}
{{- fail "relayhost.existingSecret holds credentials for config.relayhost: set config.relayhost too" -}}
{{- end -}}
{{- $tlsCa := $root.Values.tlsCa -}}
{{- if and $tlsCa.existingSecret $tlsCa.existingConfigMap -}}
{{- fail "tlsCa: set existingSecret or existingConfigMap, not both" -}}
{{- end -}}
{{- $mountCa := and $isWorker (or $tlsCa.existingSecret $tlsCa.existingConfigMap) -}}
{{- $dkim := $root.Values.dkim -}}
{{- if and $dkim.existingSecret (not $dkim.keys) -}}
{{- fail "dkim.existingSecret: list its keys in dkim.keys ({domain, selector, secretKey, publicKey} each; mounted as <domain>/<selector>.key into the queue-manager, <domain>/<selector>.pub into the smtp-ingress)" -}}
{{- end -}}
{{- if and $dkim.keys (not $dkim.existingSecret) -}}
{{- fail "dkim.keys: set dkim.existingSecret, the Secret holding them" -}}
{{- end -}}
{{- $mountDkim := and $dkim.existingSecret (or $isIngress (eq .key "queueManager")) -}}
{{- $api := and $isIngress $v.api.enabled -}}
{{- $recipientMaps := and $isIngress $v.recipientVerification.mapsConfigMap -}}
{{- $isTracker := eq .key "tracker" -}}
{{- $isWebhooks := eq .key "webhooks" -}}
{{- /* webhooks never ask the tracker: no URL, token or egress for it */ -}}
{{- $trackerOn := and $root.Values.tracker.enabled (not $isWebhooks) -}}
{{- $saAuth := and $isIngress (include "kubemta.serviceAccountAuthEnabled" $root) -}}
{{- $projected := or $relayAuth $trackerOn -}}
{{- $secretsDir := or $root.Values.secrets.existingSecret $projected -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "kubemta.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kubemta.componentLabels" . | nindent 4 }}
spec:
  {{- if not (or (include "kubemta.hpaEnabled" .) (include "kubemta.kedaEnabled" .)) }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "kubemta.componentSelectorLabels" . | nindent 6 }}
  {{- with $v.updateStrategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "kubemta.componentLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- if $isIngress }}
      {{- with include "kubemta.smtpIngress.serviceAccountName" $root }}
      serviceAccountName: {{ . }}
      {{- end }}
      {{- end }}
      # only the smtp-ingress with smtpIngress.serviceAccountAuth gets a Kubernetes API token (for TokenReview)
      automountServiceAccountToken: {{ if $saAuth }}true{{ else }}false{{ end }}
      {{- with $root.Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: {{ include "kubemta.terminationGracePeriod" . }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $c.name }}
          image: {{ include "kubemta.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [{{ $c.command | quote }}]
          envFrom:
            - configMapRef:
                name: {{ include "kubemta.configMapName" $root }}
          env:
            {{- include "kubemta.amqpEnv" $root | nindent 12 }}
            {{- if $isIngress }}
            - name: KUBEMTA_SMTP_LISTEN
              value: {{ printf "0.0.0.0:%d" (int $v.containerPorts.smtp) | quote }}
            {{- if $root.Values.tls.enabled }}
            - name: KUBEMTA_SUBMISSION_LISTEN
              value: {{ printf "0.0.0.0:%d" (int $v.containerPorts.submission) | quote }}
            - name: KUBEMTA_SMTPS_LISTEN
              value: {{ printf "0.0.0.0:%d" (int $v.containerPorts.smtps) | quote }}
            - name: KUBEMTA_TLS_CERT_FILE
              value: /etc/kubemta/tls/tls.crt
            - name: KUBEMTA_TLS_KEY_FILE
              value: /etc/kubemta/tls/tls.key
            {{- end }}
            {{- if $root.Values.auth.existingSecret }}
            - name: KUBEMTA_USERS_FILE
              value: /etc/kubemta/users/{{ $root.Values.auth.existingSecretKey }}
            {{- end }}
            # the HTTP API (domain checks); an empty value turns it off
            - name: KUBEMTA_HTTP_LISTEN
              value: {{ if $api }}{{ printf "0.0.0.0:%d" (int $v.containerPorts.api) | quote }}{{ else }}""{{ end }}
            {{- if $api }}
            {{- include "kubemta.apiEnv" $root | nindent 12 }}
            {{- end }}
            {{- include "kubemta.appAuthEnv" $root | nindent 12 }}
            {{- include "kubemta.recipientVerifyEnv" $root | nindent 12 }}
            {{- end }}
            {{- if $mountDkim }}
            - name: KUBEMTA_DKIM_KEYS_DIR
              value: /etc/kubemta/dkim
            {{- end }}
            {{- if $mountCa }}
            - name: KUBEMTA_TLS_CA_FILE
              value: /etc/kubemta/tls-ca/{{ $tlsCa.key }}
            {{- end }}
            {{- if $trackerOn }}
            {{- include "kubemta.trackerEnv" . | nindent 12 }}
            {{- end }}
            {{- if $isWebhooks }}
            - name: KUBEMTA_WEBHOOKS_FILE
              value: {{ printf "%s/%s" (include "kubemta.webhooksDir" $root) $v.existingSecretKey | quote }}
            {{- end }}
            {{- with (concat $root.Values.global.extraEnv $v.extraEnv) }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- if $isIngress }}
            - name: smtp
              containerPort: {{ $v.containerPorts.smtp }}
              protocol: TCP
            {{- if $root.Values.tls.enabled }}
            - name: submission
              containerPort: {{ $v.containerPorts.submission }}
              protocol: TCP
            - name: smtps
              containerPort: {{ $v.containerPorts.smtps }}
              protocol: TCP
            {{- end }}
            {{- if $api }}
            - name: api
              containerPort: {{ $v.containerPorts.api }}
              protocol: TCP
            {{- end }}
            {{- end }}
            {{- if $isTracker }}
            - name: http
              containerPort: {{ $v.containerPort }}
              protocol: TCP
            {{- end }}
          {{- with $v.startupProbe }}
          {{- if .enabled }}
          startupProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml (omit . "enabled") | nindent 12 }}
          {{- end }}
          {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml $v.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            {{- toYaml $v.readinessProbe | nindent 12 }}
          {{- if and $isIngress $v.preStopSeconds }}
          # a terminating pod leaves the Service's endpoints while this pause runs; SIGTERM (drain) comes after it
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ int $v.preStopSeconds | quote }}]
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $secretsDir }}
            - name: kubemta-secrets
              mountPath: /run/secrets/kubemta
              readOnly: true
            {{- end }}
            {{- if and $isIngress $root.Values.tls.enabled }}
            - name: tls
              mountPath: /etc/kubemta/tls
              readOnly: true
            {{- end }}
            {{- if and $isIngress $root.Values.auth.existingSecret }}
            - name: users
              mountPath: /etc/kubemta/users
              readOnly: true
            {{- end }}
            {{- if $mountDkim }}
            - name: dkim
              mountPath: /etc/kubemta/dkim
              readOnly: true
            {{- end }}
            {{- if $recipientMaps }}
            - name: recipient-maps
              mountPath: {{ include "kubemta.recipientMapsDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $isIngress }}
            {{- include "kubemta.appAuthMounts" $root | nindent 12 }}
            {{- end }}
            {{- if $isWebhooks }}
            - name: webhooks
              mountPath: {{ include "kubemta.webhooksDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $mountCa }}
            - name: tls-ca
              mountPath: /etc/kubemta/tls-ca
              readOnly: true
            {{- end }}
            {{- if $isTracker }}
            - name: index
              mountPath: {{ include "kubemta.trackerIndexDir" $root }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $projected }}
        # the settings' secrets directory: secrets.existingSecret plus the relayhost credentials as
        # relayhost_username / relayhost_password (KUBEMTA_RELAYHOST_USERNAME / _PASSWORD) and the tracker's tokens
        # (templates/tracker/_tracker.tpl)
        - name: kubemta-secrets
          projected:
            sources:
              {{- with $root.Values.secrets.existingSecret }}
              - secret:
                  name: {{ . }}
              {{- end }}
              {{- if $relayAuth }}
              - secret:
                  name: {{ $root.Values.relayhost.existingSecret }}
                  items:
                    - key: {{ $root.Values.relayhost.usernameKey }}
                      path: relayhost_username
                    - key: {{ $root.Values.relayhost.passwordKey }}
                      path: relayhost_password
              {{- end }}
              {{- if $trackerOn }}
              {{- include "kubemta.trackerTokenSource" . | nindent 14 }}
              {{- end }}
        {{- else if $root.Values.secrets.existingSecret }}
        - name: kubemta-secrets
          secret:
            secretName: {{ $root.Values.secrets.existingSecret }}
        {{- end }}
        {{- if and $isIngress $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ required "tls.existingSecret is required when tls.enabled" $root.Values.tls.existingSecret }}
        {{- end }}
        {{- if and $isIngress $root.Values.auth.existingSecret }}
        - name: users
          secret:
            secretName: {{ $root.Values.auth.existingSecret }}
        {{- end }}
        {{- if $mountDkim }}
        # DKIM keys: Secret keys cannot contain "/", so each is projected to <domain>/<selector>.key (the private
        # key, queue-manager only: it signs) or <domain>/<selector>.pub (the public key, smtp-ingress only: its
        # domain check compares it with DNS). The internet-facing ingress never gets a private key.
        - name: dkim
          secret:
            secretName: {{ $dkim.existingSecret }}
            items:
              {{- range $dkim.keys }}
              {{- if $isIngress }}
              - key: {{ default (printf "%s_%s.pub" .domain .selector) .publicKey | quote }}
                path: {{ printf "%s/%s.pub" .domain .selector | quote }}
              {{- else }}
              - key: {{ default (printf "%s_%s.key" .domain .selector) .secretKey | quote }}
                path: {{ printf "%s/%s.key" .domain .selector | quote }}
              {{- end }}
              {{- end }}
            {{- if $isIngress }}
            # a missing public key is reported by the domain check; it must never keep the SMTP pod from starting
            optional: true
            {{- end }}
        {{- end }}
        {{- if $recipientMaps }}
        # recipient maps, one key per local domain: the whole ConfigMap as a directory (no subPath), so the
        # kubelet's updates reach the pod and the ingress re-reads them
        - name: recipient-maps
          configMap:
            name: {{ $recipientMaps }}
        {{- end }}
        {{- if $isIngress }}
        {{- include "kubemta.appAuthVolumes" $root | nindent 8 }}
        {{- end }}
        {{- if $isWebhooks }}
        # the endpoints file, the whole Secret as a directory (no subPath): the service re-reads it when it changes
        - name: webhooks
          secret:
            secretName: {{ include "kubemta.webhooksSecretName" $root }}
            items:
              - key: {{ $v.existingSecretKey | quote }}
                path: {{ $v.existingSecretKey | quote }}
        {{- end }}
        {{- if $isTracker }}
        # this replica's index of the `events` stream: rebuilt from the stream when the pod starts on a new node
        - name: index
          emptyDir:
            sizeLimit: {{ $v.persistence.sizeLimit }}
        {{- end }}
        {{- if $mountCa }}
        - name: tls-ca
          {{- if $tlsCa.existingSecret }}
          secret:
            secretName: {{ $tlsCa.existingSecret }}
          {{- else }}
          configMap:
            name: {{ $tlsCa.existingConfigMap }}
          {{- end }}
            items:
              - key: {{ $tlsCa.key }}
                path: {{ $tlsCa.key }}
        {{- end }}
{{- end -}}

{{- define "kubemta.metricsService" -}}
{{- $root := .root -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "kubemta.componentFullname" . }}-metrics
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kubemta.componentLabels" . | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "kubemta.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
{{- end -}}

{{- define "kubemta.pdb" -}}
{{- $root := .root -}}
{{- $v := get $root.Values .key -}}
{{- if $v.pdb.create }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "kubemta.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kubemta.componentLabels" . | nindent 4 }}
spec:
  {{- if $v.pdb.minAvailable }}
  minAvailable: {{ $v.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $v.pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "kubemta.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "kubemta.hpa" -}}
{{- $root := .root -}}
{{- $v := get $root.Values .key -}}
{{- $hpa := $v.autoscaling.hpa -}}
{{- if include "kubemta.hpaEnabled" . }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "kubemta.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kubemta.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "kubemta.componentFullname" . }}
  minReplicas: {{ $hpa.minReplicas }}
  maxReplicas: {{ $hpa.maxReplicas }}
  metrics:
    {{- if $hpa.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $hpa.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if $hpa.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $hpa.targetMemoryUtilizationPercentage }}
    {{- end }}
    {{- with $hpa.extraMetrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $hpa.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "kubemta.scaledObject" -}}
{{- $root := .root -}}
{{- $v := get $root.Values .key -}}
{{- $c := include "kubemta.component" . | fromYaml -}}
{{- $keda := $v.autoscaling.keda -}}
{{- if include "kubemta.kedaEnabled" . }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "kubemta.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kubemta.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "kubemta.componentFullname" . }}
  minReplicaCount: {{ $keda.minReplicas }}
  maxReplicaCount: {{ $keda.maxReplicas }}
  pollingInterval: {{ $keda.pollingInterval }}
  cooldownPeriod: {{ $keda.cooldownPeriod }}
  {{- with $keda.advanced }}
  advanced:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  triggers:
    {{- range $c.queues }}
    - type: rabbitmq
      authenticationRef:
        name: {{ include "kubemta.fullname" $root }}-rabbitmq
      metadata:
        protocol: amqp
        mode: QueueLength
        queueName: {{ . | quote }}
        value: {{ $keda.queueLength | quote }}
        {{- if $root.Values.rabbitmq.cluster.create }}
        host: {{ printf "amqp://%s.%s.svc:5672/%s" (include "kubemta.rabbitmqClusterName" $root) $root.Release.Namespace ($root.Values.rabbitmq.vhost | urlquery) | quote }}
        {{- end }}
    {{- end }}
{{- end }}
{{- end -}}

{{- define "kubemta.networkPolicy" -}}
{{- $root := .root -}}
{{- $v := get $root.Values .key -}}
{{- $isIngress := eq .key "smtpIngress" -}}
{{- $isTracker := eq .key "tracker" -}}
{{- $isWebhooks := eq .key "webhooks" -}}
{{- if $v.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "kubemta.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kubemta.componentLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "kubemta.componentSelectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    # scrapes and kubelet probes reach the metrics port
    - ports:
        - port: metrics
          protocol: TCP
      {{- with $root.Values.metrics.networkPolicyFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- if $isIngress }}
    # SMTP clients
    - ports:
        - port: smtp
          protocol: TCP
        {{- if $root.Values.tls.enabled }}
        - port: submission
          protocol: TCP
        - port: smtps
          protocol: TCP
        {{- end }}
      {{- with $v.networkPolicy.smtpFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- if $v.api.enabled }}
    # the HTTP API (sending API, domain checks): apiFrom, plus apiFromNamespaces and the namespaces of
    # serviceAccountAuth.identities (only while apiFrom restricts at all)
    - ports:
        - port: api
          protocol: TCP
      {{- with $v.networkPolicy.apiFrom }}
      from:
        {{- toYaml . | nindent 8 }}
        {{- with include "kubemta.apiNamespaces" $root }}
        {{- range splitList "," . }}
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ . | quote }}
        {{- end }}
        {{- end }}
      {{- end }}
    {{- end }}
    {{- end }}
    {{- if $isTracker }}
    # the tracker API: kubemta's own pods (duplicate checks), pods labelled for kubemta-admin, tracker.networkPolicy.allowedFrom
    - ports:
        - port: http
          protocol: TCP
      from:
        - podSelector:
            matchLabels:
              {{- include "kubemta.selectorLabels" $root | nindent 14 }}
        {{- with $v.networkPolicy.adminPodLabels }}
        - podSelector:
            matchLabels:
              {{- toYaml . | nindent 14 }}
        {{- end }}
        {{- with $v.networkPolicy.allowedFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- end }}
    {{- with $v.networkPolicy.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  egress:
    # DNS (cluster resolver; the dns-resolver and the ingress' domain check also ask the configured name servers)
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    # the broker
    - ports:
        {{- range $root.Values.rabbitmq.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $root.Values.rabbitmq.networkPolicyTo }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- if $isIngress }}
    {{- include "kubemta.recipientVerifyEgress" $root | nindent 4 }}
    {{- include "kubemta.kubernetesApiEgress" $root | nindent 4 }}
    {{- end }}
    {{- if $isWebhooks }}
    {{- include "kubemta.webhooksEgress" $root | nindent 4 }}
    {{- end }}
    {{- if eq .key "deliveryWorker" }}
    # destination MX hosts, relayhosts and LMTP servers
    {{- $relayPort := include "kubemta.relayhostPort" $root }}
    {{- $ports := list }}
    - ports:
        {{- range $v.networkPolicy.deliveryPorts }}
        {{- $ports = append $ports (toString (int .)) }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
        {{- if and $relayPort (not (has $relayPort $ports)) }}
        # config.relayhost
        - port: {{ $relayPort }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- if and (eq .key "dnsResolver") $root.Values.config.mtaSts }}
    # MTA-STS policy fetches (https://mta-sts.<domain>/.well-known/mta-sts.txt)
    - ports:
        - port: 443
          protocol: TCP
    {{- end }}
    {{- if and $root.Values.tracker.enabled (not (or $isTracker $isWebhooks)) }}
    {{- include "kubemta.trackerEgress" $root | nindent 4 }}
    {{- end }}
    {{- with $v.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}

{{- define "kubemta.serviceMonitor" -}}
{{- $root := .root -}}
{{- $sm := $root.Values.metrics.serviceMonitor -}}
{{- if $sm.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "kubemta.componentFullname" . }}
  namespace: {{ default $root.Release.Namespace $sm.namespace }}
  labels:
    {{- include "kubemta.componentLabels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  namespaceSelector:
    matchNames: [{{ $root.Release.Namespace | quote }}]
  selector:
    matchLabels:
      {{- include "kubemta.componentSelectorLabels" . | nindent 6 }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      {{- with $sm.relabelings }}
      relabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $sm.metricRelabelings }}
      metricRelabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end -}}
