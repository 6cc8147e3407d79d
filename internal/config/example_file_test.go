package config

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const exampleFile = "../../shoal.example.yml"

func TestExampleFileIsDefault(t *testing.T) {
	t.Parallel()
	got, err := Load(exampleFile, nil)
	if err != nil {
		t.Fatalf("Load(%s): %v", exampleFile, err)
	}
	if got != Default() {
		t.Errorf("%s loads as\n%+v\nwant Default()\n%+v", exampleFile, got, Default())
	}
}

// The example file decodes with yaml.v3's own strict decoder into Config
// too: the struct tags and the key table agree.
func TestExampleFileStrictDecode(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	c := base()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	c.derive()
	if c != Default() {
		t.Errorf("strict decode gave\n%+v\nwant Default()\n%+v", c, Default())
	}
}

// exampleKeys returns every leaf key path in the example file with the
// comment above it.
func exampleKeys(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.MappingNode {
				walk(prefix+k.Value+".", v)
				continue
			}
			out[prefix+k.Value] = k.HeadComment
		}
	}
	walk("", doc.Content[0])
	return out
}

func TestExampleFileDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	inFile := exampleKeys(t)
	for _, k := range Keys() {
		comment, ok := inFile[k.YAMLKey]
		if !ok {
			t.Errorf("%s does not set %s", exampleFile, k.YAMLKey)
			continue
		}
		if !strings.Contains(comment, "Env "+k.Env+".") {
			t.Errorf("%s: the comment above %s does not name %s:\n%s", exampleFile, k.YAMLKey, k.Env, comment)
		}
		if !strings.Contains(comment, "Default") {
			t.Errorf("%s: the comment above %s does not give its default:\n%s", exampleFile, k.YAMLKey, comment)
		}
		delete(inFile, k.YAMLKey)
	}
	for extra := range inFile {
		t.Errorf("%s sets %s, which Keys() does not list", exampleFile, extra)
	}
}

func TestExampleFileCommentsGiveDefaults(t *testing.T) {
	t.Parallel()
	inFile := exampleKeys(t)
	d := Default()
	for i := range table {
		k := &table[i]
		var want string
		switch v := k.get(&d); {
		case k.derived != "":
			want = "derived as " + v + "."
		case v == "":
			want = "Default: empty."
		default:
			want = "Default " + v + "."
		}
		if !strings.Contains(inFile[k.path], want) {
			t.Errorf("%s: the comment above %s lacks %q:\n%s", exampleFile, k.path, want, inFile[k.path])
		}
	}
}
