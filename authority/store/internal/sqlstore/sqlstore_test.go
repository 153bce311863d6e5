package sqlstore

import "testing"

func TestDollar(t *testing.T) {
	for q, want := range map[string]string{
		"SELECT 1":                       "SELECT 1",
		"UPDATE t SET a = ? WHERE b = ?": "UPDATE t SET a = $1 WHERE b = $2",
		"VALUES (?, ?, ?)":               "VALUES ($1, $2, $3)",
	} {
		if got := Dollar(q); got != want {
			t.Errorf("Dollar(%q) = %q, want %q", q, got, want)
		}
	}
}
