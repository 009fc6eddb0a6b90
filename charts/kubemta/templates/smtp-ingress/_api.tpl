{{/*
The smtp-ingress HTTP API's bearer token and limits. The token comes from `smtpIngress.api.existingSecret`, or
from the Secret the chart generates (secret-api-token.yaml), like rabbitmq.existingSecret / rabbitmq.url.
*/}}

{{/* The Secret holding KUBEMTA_API_TOKEN. */}}
{{- define "kubemta.apiTokenSecretName" -}}
{{- if .Values.smtpIngress.api.existingSecret -}}
{{- .Values.smtpIngress.api.existingSecret -}}
{{- else -}}
{{- include "kubemta.fullname" . }}-api-token
{{- end -}}
{{- end -}}

{{/* The smtp-ingress env entries of the API: the token from its Secret, and the limits that are set. */}}
{{- define "kubemta.apiEnv" -}}
{{- $api := .Values.smtpIngress.api -}}
- name: KUBEMTA_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "kubemta.apiTokenSecretName" . }}
      key: {{ $api.existingSecretKey }}
{{- $limits := include "kubemta.optionalSettings" (dict
    "KUBEMTA_API_CHECKS_PER_MINUTE" $api.checksPerMinute
    "KUBEMTA_API_CHECK_BURST" $api.checkBurst
    "KUBEMTA_API_MAX_CONCURRENT_CHECKS" $api.maxConcurrentChecks
    "KUBEMTA_API_CHECK_TIMEOUT" $api.checkTimeout
    "KUBEMTA_API_CACHE_TTL" $api.cacheTtl
    "KUBEMTA_API_CACHE_SIZE" $api.cacheSize) | fromYaml }}
{{- range $name, $value := $limits }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
