// Command kubectl-ironlb explains ironlb's load balancing: put it on the
// PATH and run `kubectl ironlb status`. It only reads (package inspect).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/ironlb/ironlb/inspect"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := inspect.Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kubectl-ironlb:", err)
		if errors.Is(err, inspect.ErrUsage) {
			fmt.Fprint(os.Stderr, "\n"+inspect.Usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}
