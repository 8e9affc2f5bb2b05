package rego

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/ztgate/ztgate/authz"
)

// CheckInputValue compares the fast OPA value with the converted map.
func CheckInputValue(a *authz.Attributes) error {
	fast, err := inputValue(a, needAll, nil)
	if err != nil {
		return err
	}
	slow, err := ast.InterfaceToValue(Input(a))
	if err != nil {
		return err
	}
	if fast.Compare(slow) != 0 {
		return fmt.Errorf("input values differ:\nfast %v\nslow %v", fast, slow)
	}
	return nil
}
