{{/*
How apps authenticate to the smtp-ingress (no relay by network by default: config.relayNetworks is empty).
- ServiceAccount tokens (smtpIngress.serviceAccountAuth): the identities file `NAMESPACE/NAME:IDENTITY,...` from the
  ConfigMap the chart renders (configmap-serviceaccounts.yaml) or an existing one, mounted as a directory (no subPath,
  so the kubelet's updates reach the pod and the ingress re-reads it); the ingress' own ServiceAccount token is
  mounted (in-cluster, default paths) and bound to `system:auth-delegator` for TokenReview
  (serviceaccount.yaml, clusterrolebinding.yaml).
- API keys (smtpIngress.apiKeys): the file `kubemta-admin api-keys create` writes, from a Secret, mounted the same way.
*/}}

{{- define "kubemta.serviceAccountIdentitiesDir" -}}/etc/kubemta/serviceaccounts{{- end -}}
{{- define "kubemta.apiKeysDir" -}}/etc/kubemta/api-keys{{- end -}}

{{/* The smtp-ingress' ServiceAccount: its own, an existing one, or "" (the namespace's default). */}}
{{- define "kubemta.smtpIngress.serviceAccountName" -}}
{{- $sa := .Values.smtpIngress.serviceAccount -}}
{{- if $sa.name -}}
{{- $sa.name -}}
{{- else if $sa.create -}}
{{- include "kubemta.smtpIngress.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* "true" while apps may authenticate with ServiceAccount tokens; fails on contradicting values. */}}
{{- define "kubemta.serviceAccountAuthEnabled" -}}
{{- $auth := .Values.smtpIngress.serviceAccountAuth -}}
{{- if $auth.enabled -}}
{{- if and $auth.existingConfigMap $auth.identities -}}
{{- fail "smtpIngress.serviceAccountAuth: set identities or existingConfigMap, not both" -}}
{{- end -}}
{{- if not (include "kubemta.smtpIngress.serviceAccountName" .) -}}
{{- fail "smtpIngress.serviceAccountAuth needs the ingress' own ServiceAccount (it is bound to system:auth-delegator): set smtpIngress.serviceAccount.create or .name, never the namespace's default" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The ConfigMap and key holding the identities file. */}}
{{- define "kubemta.serviceAccountIdentitiesConfigMap" -}}
{{- default (printf "%s-serviceaccounts" (include "kubemta.fullname" .)) .Values.smtpIngress.serviceAccountAuth.existingConfigMap -}}
{{- end -}}

{{- define "kubemta.serviceAccountIdentitiesKey" -}}
{{- if .Values.smtpIngress.serviceAccountAuth.existingConfigMap -}}
{{- .Values.smtpIngress.serviceAccountAuth.existingConfigMapKey -}}
{{- else -}}
identities
{{- end -}}
{{- end -}}

{{/* The namespaces (sorted, unique) whose pods may call the HTTP API besides apiFrom: apiFromNamespaces and the
namespaces of serviceAccountAuth.identities. */}}
{{- define "kubemta.apiNamespaces" -}}
{{- $namespaces := .Values.smtpIngress.networkPolicy.apiFromNamespaces | default list -}}
{{- if .Values.smtpIngress.serviceAccountAuth.enabled -}}
{{- range $account, $_ := .Values.smtpIngress.serviceAccountAuth.identities -}}
{{- $namespaces = append $namespaces (first (splitList "/" $account)) -}}
{{- end -}}
{{- end -}}
{{- $namespaces | uniq | sortAlpha | join "," -}}
{{- end -}}

{{/* The smtp-ingress env entries of app authentication. */}}
{{- define "kubemta.appAuthEnv" -}}
{{- $v := .Values.smtpIngress -}}
{{- if include "kubemta.serviceAccountAuthEnabled" . }}
# apps' ServiceAccount tokens, verified with TokenReview (the ingress' own token: in-cluster, default paths)
- name: KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE
  value: {{ printf "%s/%s" (include "kubemta.serviceAccountIdentitiesDir" .) (include "kubemta.serviceAccountIdentitiesKey" .) | quote }}
- name: KUBEMTA_SERVICEACCOUNT_AUDIENCE
  value: {{ $v.serviceAccountAuth.audience | quote }}
{{- end }}
{{- with $v.apiKeys.existingSecret }}
{{- if not $v.api.enabled }}
{{- fail "smtpIngress.apiKeys.existingSecret: API keys are for POST /v1/messages of the HTTP API; set smtpIngress.api.enabled" }}
{{- end }}
- name: KUBEMTA_API_KEYS_FILE
  value: {{ printf "%s/%s" (include "kubemta.apiKeysDir" $) $v.apiKeys.existingSecretKey | quote }}
{{- end }}
{{- end -}}

{{/* The smtp-ingress volume mounts of app authentication. */}}
{{- define "kubemta.appAuthMounts" -}}
{{- if include "kubemta.serviceAccountAuthEnabled" . }}
- name: serviceaccount-identities
  mountPath: {{ include "kubemta.serviceAccountIdentitiesDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.smtpIngress.apiKeys.existingSecret }}
- name: api-keys
  mountPath: {{ include "kubemta.apiKeysDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The smtp-ingress volumes of app authentication (whole directories: updates reach the pod). */}}
{{- define "kubemta.appAuthVolumes" -}}
{{- if include "kubemta.serviceAccountAuthEnabled" . }}
{{- $key := include "kubemta.serviceAccountIdentitiesKey" . }}
- name: serviceaccount-identities
  configMap:
    name: {{ include "kubemta.serviceAccountIdentitiesConfigMap" . }}
    items:
      - key: {{ $key | quote }}
        path: {{ $key | quote }}
{{- end }}
{{- with .Values.smtpIngress.apiKeys }}
{{- if .existingSecret }}
- name: api-keys
  secret:
    secretName: {{ .existingSecret }}
    items:
      - key: {{ .existingSecretKey | quote }}
        path: {{ .existingSecretKey | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The NetworkPolicy egress rule to the Kubernetes API (TokenReview), while ServiceAccount auth is on. */}}
{{- define "kubemta.kubernetesApiEgress" -}}
{{- $np := .Values.smtpIngress.networkPolicy -}}
{{- if and (include "kubemta.serviceAccountAuthEnabled" .) $np.kubernetesApiPorts }}
# the Kubernetes API: TokenReview of apps' ServiceAccount tokens
- ports:
    {{- range $np.kubernetesApiPorts }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $np.kubernetesApiTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* NOTES: how apps authenticate (ServiceAccount tokens, API keys). */}}
{{- define "kubemta.notesAppAuth" -}}
{{- $v := .Values.smtpIngress -}}
{{- $auth := $v.serviceAccountAuth -}}
{{- $ns := .Release.Namespace -}}
{{- $apiUrl := printf "http://%s-api.%s.svc:%d/v1/messages" (include "kubemta.smtpIngress.fullname" .) $ns (int $v.api.port) -}}
{{- if include "kubemta.serviceAccountAuthEnabled" . }}
{{- $account := "shop/checkout" }}
{{- $identity := "orders@shop.example.com" }}
{{- range $name, $identities := $auth.identities }}{{ $account = $name }}{{ $identity = first $identities }}{{ end }}
{{- if hasSuffix "/*" $account }}{{ $account = printf "%s/my-app" (trimSuffix "/*" $account) }}{{ end }}
{{- if hasPrefix "@" $identity }}{{ $identity = trimPrefix "@" $identity }}{{ end }}
{{- if not (contains "@" $identity) }}{{ $identity = printf "app@%s" $identity }}{{ end }}
{{- $accountNs := first (splitList "/" $account) }}
{{- $accountName := last (splitList "/" $account) }}

Apps send as their own ServiceAccount (smtpIngress.serviceAccountAuth), each only as the sender identities listed for it;
the ingress verifies their tokens with the TokenReview API (ClusterRoleBinding {{ include "kubemta.fullname" . }}-{{ $ns }}-tokenreview).
{{- if $auth.existingConfigMap }}
  Accounts and their identities: ConfigMap {{ $auth.existingConfigMap }} (key {{ $auth.existingConfigMapKey }}), re-read when it changes.
{{- else if $auth.identities }}
  Accounts and their identities (ConfigMap {{ include "kubemta.serviceAccountIdentitiesConfigMap" . }}, re-read when it changes):
{{- range $name, $identities := $auth.identities }}
    {{ $name }}: {{ join ", " $identities }}
{{- end }}
{{- else }}
  No account may send yet: list them in smtpIngress.serviceAccountAuth.identities, e.g.
    --set-json 'smtpIngress.serviceAccountAuth.identities={"{{ $account }}":["{{ $identity }}"]}'
{{- end }}

  1. Give the app's pod (namespace {{ $accountNs }}, serviceAccountName: {{ $accountName }}) a token bound to the audience
     "{{ $auth.audience }}"; the kubelet renews it before it expires:

       volumes:
         - name: kubemta-token
           projected:
             sources:
               - serviceAccountToken:
                   audience: {{ $auth.audience }}
                   expirationSeconds: 3600
                   path: token
       # in the container:
       volumeMounts:
         - name: kubemta-token
           mountPath: /var/run/secrets/kubemta
           readOnly: true

  2. Send with it, reading the file each time (it rotates):
{{- if $v.api.enabled }}

     HTTP API: POST {{ $apiUrl }}
{{- if $v.networkPolicy.enabled }}{{ if $v.networkPolicy.apiFrom }}
       (the NetworkPolicy admits smtpIngress.networkPolicy.apiFrom{{ with include "kubemta.apiNamespaces" . }} and the namespaces {{ replace "," ", " . }}{{ end }})
{{- end }}{{ end }}
       curl {{ $apiUrl }} \
         -H "Authorization: Bearer $(cat /var/run/secrets/kubemta/token)" -H "Content-Type: application/json" \
         -d '{"from": {"address": "{{ $identity }}"}, "to": [{"address": "someone@example.org"}], "subject": "Hello", "text": "Hello"}'
{{- end }}

     SMTP: AUTH PLAIN on the submission port, user {{ $account }} (or system:serviceaccount:{{ $accountNs }}:{{ $accountName }}), the token as password:
{{- if .Values.tls.enabled }}
       swaks --server {{ include "kubemta.smtpIngress.fullname" . }}.{{ $ns }}.svc:{{ $v.service.ports.submission }} --tls --auth PLAIN \
         --auth-user {{ $account }} --auth-password "$(cat /var/run/secrets/kubemta/token)" --from {{ $identity }} --to someone@example.org
{{- else }}
       (needs tls.enabled: AUTH is offered only over TLS, on ports {{ $v.service.ports.submission }} and {{ $v.service.ports.smtps }})
{{- end }}
{{- end }}
{{- with $v.apiKeys.existingSecret }}

API keys (smtpIngress.apiKeys): Secret {{ . }} (key {{ $v.apiKeys.existingSecretKey }}) is the ingress' API keys file, re-read when it
changes; make keys with `kubemta-admin api-keys create NAME --identity ...` and send as
  curl {{ $apiUrl }} -H "Authorization: Bearer <key>" ...
{{- end }}
{{- end -}}
