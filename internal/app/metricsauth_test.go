package app

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestBearer(t *testing.T) {
	for _, tc := range []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"  BEARER   abc  ", "abc", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic abc", "", false},
		{"abc", "", false},
		{"", "", false},
	} {
		token, ok := bearer(tc.header)
		if token != tc.token || ok != tc.ok {
			t.Errorf("bearer(%q) = %q, %v; want %q, %v", tc.header, token, ok, tc.token, tc.ok)
		}
	}
}

// TestDecisions: allowed scrapes are remembered longer than denials, and
// a flood of distinct tokens never grows the cache past its bound.
func TestDecisions(t *testing.T) {
	now := time.Unix(0, 0)
	c := newDecisions(func() time.Time { return now })
	key := func(i int) decisionKey {
		return decisionKey{token: sha256.Sum256([]byte(fmt.Sprint(i))), verb: "get", path: "/metrics"}
	}
	c.put(key(1), decision{code: http.StatusOK})
	c.put(key(2), decision{code: http.StatusForbidden})
	c.put(key(3), decision{code: http.StatusUnauthorized})
	now = now.Add(denyTTL)
	if _, ok := c.get(key(1)); !ok {
		t.Error("an allowed decision expired after denyTTL")
	}
	for _, k := range []decisionKey{key(2), key(3)} {
		if _, ok := c.get(k); ok {
			t.Error("a denial outlived denyTTL")
		}
	}
	now = now.Add(allowTTL - denyTTL)
	if _, ok := c.get(key(1)); ok {
		t.Error("an allowed decision outlived allowTTL")
	}
	for i := range 10 * maxDecisions {
		c.put(key(i), decision{code: http.StatusUnauthorized})
		if len(c.m) > maxDecisions {
			t.Fatalf("%d decisions cached after %d puts; the bound is %d", len(c.m), i+1, maxDecisions)
		}
	}
	if _, ok := c.get(key(10*maxDecisions - 1)); !ok {
		t.Error("the newest decision was dropped")
	}
}
