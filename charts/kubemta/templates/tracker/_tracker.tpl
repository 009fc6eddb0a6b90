{{/*
The tracker (kubemta-tracker): the index of the `events` stream behind `kubemta-admin queue`, and the duplicate
checks of the other components. Its tokens come from `tracker.auth.existingSecret`, or from the Secret the chart
generates (secret-tokens.yaml), mounted as files into the settings' secrets directory (/run/secrets/kubemta):
  tracker pod:      read-tokens -> tracker_read_tokens (KUBEMTA_TRACKER_READ_TOKENS), admin-tokens -> tracker_admin_tokens
                    (KUBEMTA_TRACKER_ADMIN_TOKENS); admin-token -> KUBEMTA_ADMIN_TOKEN for `kubemta-admin` in the pod
  other components: service-token -> tracker_token (KUBEMTA_TRACKER_TOKEN, the read token of duplicate checks)
*/}}

{{/* The Secret holding the tracker's tokens. */}}
{{- define "kubemta.trackerSecretName" -}}
{{- if .Values.tracker.auth.existingSecret -}}
{{- .Values.tracker.auth.existingSecret -}}
{{- else -}}
{{- include "kubemta.tracker.fullname" . }}-tokens
{{- end -}}
{{- end -}}

{{/* The tracker API's in-cluster URL (KUBEMTA_TRACKER_URL of the other components). */}}
{{- define "kubemta.trackerUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "kubemta.tracker.fullname" .) .Release.Namespace (int .Values.tracker.service.port) -}}
{{- end -}}

{{- define "kubemta.trackerIndexDir" -}}/var/lib/kubemta-tracker{{- end -}}

{{/* (dict "root" $ "key" <component>) -> the env entries that tie the component to the tracker. */}}
{{- define "kubemta.trackerEnv" -}}
{{- $root := .root -}}
{{- $t := $root.Values.tracker -}}
{{- if eq .key "tracker" }}
- name: KUBEMTA_TRACKER_LISTEN
  value: {{ printf "0.0.0.0:%d" (int $t.containerPort) | quote }}
- name: KUBEMTA_INDEX_PATH
  value: {{ printf "%s/index.sqlite3" (include "kubemta.trackerIndexDir" $root) | quote }}
{{- with include "kubemta.optionalSettings" (dict "KUBEMTA_SYNC_TIMEOUT" $t.syncTimeout "KUBEMTA_PRUNE_INTERVAL" $t.pruneInterval) | fromYaml }}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
# `kubectl exec deploy/<tracker> -- kubemta-admin queue ...` asks this pod's API with the admin token
- name: KUBEMTA_TRACKER_URL
  value: {{ printf "http://127.0.0.1:%d" (int $t.containerPort) | quote }}
- name: KUBEMTA_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "kubemta.trackerSecretName" $root }}
      key: admin-token
      optional: true
{{- else }}
- name: KUBEMTA_TRACKER_URL
  value: {{ include "kubemta.trackerUrl" $root | quote }}
{{- end }}
{{- end -}}

{{/* (dict "root" $ "key" <component>) -> the projected source of the tracker's token files. */}}
{{- define "kubemta.trackerTokenSource" -}}
- secret:
    name: {{ include "kubemta.trackerSecretName" .root }}
    items:
      {{- if eq .key "tracker" }}
      - key: read-tokens
        path: tracker_read_tokens
      - key: admin-tokens
        path: tracker_admin_tokens
      {{- else }}
      - key: service-token
        path: tracker_token
      {{- end }}
{{- end -}}

{{/* Egress to the tracker API, for the components that ask it (duplicate checks). */}}
{{- define "kubemta.trackerEgress" -}}
# the tracker API (duplicate checks)
- ports:
    - port: {{ .Values.tracker.containerPort }}
      protocol: TCP
  to:
    - podSelector:
        matchLabels:
          {{- include "kubemta.componentSelectorLabels" (dict "root" . "key" "tracker") | nindent 10 }}
{{- end -}}
