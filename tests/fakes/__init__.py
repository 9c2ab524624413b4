"""Small fake servers for what lies off this machine (Slack, TGI), speaking their wire
protocols over real HTTP on loopback, port 0. Shared by every test package."""
