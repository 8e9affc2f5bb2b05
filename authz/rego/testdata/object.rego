package ztgate.test.object

default allowed := false

allowed if "admins" in input.jwt.claims.groups

allowed if input.peer.namespace == "trusted"

headers["x-user"] := input.request_principal if allowed

response_headers["x-checked-by"] := "rego"

default http_status := 403

http_status := 401 if input.request_principal == ""

default body := "forbidden"

body := "login first" if input.request_principal == ""

decision := {
	"allowed": allowed,
	"headers": headers,
	"response_headers": response_headers,
	"http_status": http_status,
	"body": body,
}
