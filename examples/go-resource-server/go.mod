module example.com/authserver-go-resource-server

go 1.19
