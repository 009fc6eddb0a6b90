{{/*
Webhooks (kubemta-webhooks): apps' delivery events POSTed to their endpoints. The endpoints file (a JSON list,
KUBEMTA_WEBHOOKS_FILE) comes from `webhooks.existingSecret`, or from the Secret the chart renders from
`webhooks.endpoints` (secret-endpoints.yaml); it is mounted as a directory, so the service sees its updates.
*/}}

{{- define "kubemta.webhooksDir" -}}/etc/kubemta/webhooks{{- end -}}

{{/* The Secret holding the endpoints file; fails when both sources are given. */}}
{{- define "kubemta.webhooksSecretName" -}}
{{- $w := .Values.webhooks -}}
{{- if and $w.existingSecret $w.endpoints -}}
{{- fail "webhooks: set endpoints or existingSecret, not both" -}}
{{- end -}}
{{- default (include "kubemta.webhooks.fullname" .) $w.existingSecret -}}
{{- end -}}

{{/* Egress to the endpoints: webhooks.networkPolicy.endpointPorts, to endpointsTo (empty = anywhere). */}}
{{- define "kubemta.webhooksEgress" -}}
{{- $np := .Values.webhooks.networkPolicy -}}
{{- if $np.endpointPorts }}
# the webhook endpoints
- ports:
    {{- range $np.endpointPorts }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $np.endpointsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}
