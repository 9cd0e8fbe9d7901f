{{/* Alert rules, shared by the PrometheusRule and `promtool check rules` in the tests. */}}
{{- define "aikeys.alertGroups" -}}
groups:
  - name: aikeys.allocations
    rules:
      {{- range .Values.monitoring.alertThresholds }}
      - alert: AIKeysAllocationBudget{{ . }}Percent
        expr: |
          max by (namespace, allocation) (1 - aikeys_allocation_remaining_usd / aikeys_allocation_budget_usd) * 100 >= {{ . }}
        for: 1m
        labels:
          severity: {{ if ge (int .) 100 }}critical{{ else }}warning{{ end }}
        annotations:
          summary: "Allocation {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.allocation {{ "}}" }} has used {{ . }}% of its budget"
          description: "Spend is at {{ "{{" }} $value | humanize {{ "}}" }}% of the period's budget."
      {{- end }}
      - alert: AIKeysAllocationExhausted
        expr: max by (namespace, allocation) (aikeys_allocation_remaining_usd) <= 0
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: "Allocation {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.allocation {{ "}}" }} is exhausted"
          description: "Requests charged to it get HTTP 402 until the period ends or the budget is raised."
  - name: aikeys.gateway
    rules:
      - alert: AIKeysLedgerErrors
        expr: sum(increase(aikeys_ledger_errors_total[5m])) > 0
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: "The gateway cannot reach the Redis ledger"
          description: "{{ "{{" }} $value {{ "}}" }} ledger errors in 5 minutes; requests are refused with 503 (fail-closed)."
      - alert: AIKeysUpstreamErrorRate
        expr: |
          sum by (provider) (rate(aikeys_upstream_errors_total[5m])) /
          clamp_min(sum by (provider) (rate(aikeys_upstream_duration_seconds_count[5m])), 1e-9) > 0.05
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "More than 5% of requests to {{ "{{" }} $labels.provider {{ "}}" }} fail"
          description: "Upstream error ratio {{ "{{" }} $value | humanizePercentage {{ "}}" }} over 5 minutes."
{{- end -}}
