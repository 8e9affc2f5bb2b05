package authz

import "github.com/ztgate/ztgate/configs"

// Action is a policy's action. String matches the config spelling.
type Action uint8

// The actions, in evaluation order (AUDIT only records).
const (
	ActionNone Action = iota // no policy decided
	ActionCustom
	ActionDeny
	ActionAllow
	ActionAudit
)

func (a Action) String() string {
	switch a {
	case ActionCustom:
		return configs.ActionCustom
	case ActionDeny:
		return configs.ActionDeny
	case ActionAllow:
		return configs.ActionAllow
	case ActionAudit:
		return configs.ActionAudit
	}
	return "NONE"
}

// MarshalText makes an Action log and encode as its name.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

func parseAction(s string) (Action, bool) {
	switch s {
	case configs.ActionCustom:
		return ActionCustom, true
	case configs.ActionDeny:
		return ActionDeny, true
	case configs.ActionAllow:
		return ActionAllow, true
	case configs.ActionAudit:
		return ActionAudit, true
	}
	return ActionNone, false
}
