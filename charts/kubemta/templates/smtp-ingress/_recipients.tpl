{{/*
Recipient verification at RCPT (smtpIngress.recipientVerification): the smtp-ingress asks the LMTP server of a
local domain that config.transports routes over LMTP whether a recipient exists (KUBEMTA_TRANSPORTS reaches it
through the shared ConfigMap), or reads the domain's recipient map from a ConfigMap mounted as a directory (one
file per domain, so the kubelet's updates reach the pod and the ingress re-reads them).
*/}}

{{- define "kubemta.recipientMapsDir" -}}/etc/kubemta/recipients{{- end -}}

{{/* The TCP ports of the `lmtp:` next hops of config.transports (24 when none is given), comma-separated. */}}
{{- define "kubemta.lmtpPorts" -}}
{{- $ports := list -}}
{{- range splitList ";" (default "" .Values.config.transports) -}}
{{- $parts := splitn "=" 2 (trim .) -}}
{{- $value := lower (trim (default "" $parts._1)) -}}
{{- if hasPrefix "lmtp:" $value -}}
{{- $hop := trimPrefix "inet:" (trimPrefix "lmtp:" $value) -}}
{{- if not (hasPrefix "unix:" $hop) -}}
{{- $port := regexFind ":[0-9]+$" $hop -}}
{{- $ports = append $ports (ternary (trimPrefix ":" $port) "24" (ne $port "")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- join "," (uniq $ports) -}}
{{- end -}}

{{/* The smtp-ingress env entries of recipient verification. */}}
{{- define "kubemta.recipientVerifyEnv" -}}
{{- $rv := .Values.smtpIngress.recipientVerification -}}
{{- if and $rv.mapsConfigMap (not $rv.mapDomains) -}}
{{- fail "smtpIngress.recipientVerification.mapsConfigMap: list its domains (its keys) in mapDomains" -}}
{{- end -}}
{{- if and $rv.mapDomains (not $rv.mapsConfigMap) -}}
{{- fail "smtpIngress.recipientVerification.mapDomains: set mapsConfigMap, the ConfigMap holding the maps" -}}
{{- end -}}
- name: KUBEMTA_RECIPIENT_VERIFY
  value: {{ $rv.enabled | toString | quote }}
{{- with $rv.mapDomains }}
{{- $dir := include "kubemta.recipientMapsDir" $ }}
{{- $maps := list }}
{{- range . }}
{{- $maps = append $maps (printf "%s=%s/%s" . $dir .) }}
{{- end }}
- name: KUBEMTA_RECIPIENT_MAPS
  value: {{ join "," $maps | quote }}
{{- end }}
{{- $limits := include "kubemta.optionalSettings" (dict
    "KUBEMTA_RECIPIENT_VERIFY_TIMEOUT" $rv.timeout
    "KUBEMTA_RECIPIENT_VERIFY_CONCURRENCY" $rv.concurrency
    "KUBEMTA_RECIPIENT_VERIFY_POSITIVE_TTL" $rv.positiveTtl
    "KUBEMTA_RECIPIENT_VERIFY_NEGATIVE_TTL" $rv.negativeTtl
    "KUBEMTA_RECIPIENT_VERIFY_CACHE_SIZE" $rv.cacheSize
    "KUBEMTA_RECIPIENT_DELIMITER" $rv.recipientDelimiter) | fromYaml }}
{{- range $name, $value := $limits }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The NetworkPolicy egress rule to the LMTP servers, while LMTP probes are on and config.transports has any. */}}
{{- define "kubemta.recipientVerifyEgress" -}}
{{- $ports := include "kubemta.lmtpPorts" . -}}
{{- if and .Values.smtpIngress.recipientVerification.enabled $ports }}
# LMTP mailbox servers of local domains (config.transports): recipient verification at RCPT
- ports:
    {{- range splitList "," $ports }}
    - port: {{ int . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end -}}
