package ztgate.test.error

# For a GET, both rules produce a value: OPA reports eval_conflict_error,
# and ztgate must deny.
allow := true if input.attributes.request.http.method == "GET"

allow := false if true
