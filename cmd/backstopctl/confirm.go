package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Destructive commands (deletes, taking a service out of service) say what
// they will do and ask for a "yes" on standard input; --yes answers it for
// scripts. Without a terminal or a pipe giving the answer, nothing is done.

// addYesFlag adds --yes to a destructive command.
func addYesFlag(cmd *cobra.Command) *bool {
	var yes bool
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do it without asking for confirmation (for scripts)")
	return &yes
}

// errDeclined is a confirmation answered with anything but yes.
var errDeclined = errors.New("not confirmed: nothing was changed")

// confirm prints what will happen and reads the answer, unless yes.
func (a *app) confirm(yes bool, what string) error {
	if yes {
		return nil
	}
	fmt.Fprintf(a.stderr, "%s\nType yes to go on: ", what)
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	fmt.Fprintln(a.stderr)
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return usageErrorf("no confirmation on standard input: nothing was changed (pass --yes to confirm in a script)")
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "yes", "y":
		return nil
	}
	return errDeclined
}
